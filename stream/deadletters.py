"""Turning a rejected record into a dead letter: the record, its origin and every reason.

Examples
--------
>>> import datetime as dt
>>> from stream.kafka import Message
>>> from stream.records import DeadLetter, decode
>>> msg = Message("dwcp.telemetry", 3, 17, b"n-001", b"{oops", 0)
>>> errors = [FieldError(field="", reason="not valid JSON")]
>>> letter = decode(dead_letter(msg, errors, "ingest", dt.datetime(2026, 1, 5, tzinfo=dt.UTC)), DeadLetter)
>>> letter.reason, letter.source_topic, letter.partition, letter.offset, letter.original
('not valid JSON', 'dwcp.telemetry', 3, 17, b'{oops')
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import orjson

from stream.kafka.base import Message, TopicPartition
from stream.records import DeadLetter, FieldError, encode

#: Header of a record its source already rejected (e.g. a CSV cell that is not a number):
#: a JSON list of ``{"field", "reason"}``; the loop dead-letters it without decoding.
SOURCE_ERRORS = "dwcp-source-errors"


def source_errors(msg: Message) -> list[FieldError] | None:
    """The reasons a source already rejected ``msg`` for, or ``None`` (decode it as usual).

    >>> source_errors(Message("t", 0, 3, None, b"a,b", 0, ((SOURCE_ERRORS, b'[{"field": "x", "reason": "y"}]'),)))
    [FieldError(field='x', reason='y', value=None)]
    """
    for name, value in msg.headers:
        if name == SOURCE_ERRORS:
            return [FieldError(**e) for e in orjson.loads(value)]
    return None


def dead_letter_reason(errors: Sequence[FieldError], limit: int = 3) -> str:
    """One-line summary of why a record was rejected.

    >>> dead_letter_reason([FieldError(field="rtt_ms", reason="-4 is below the minimum 0 ms")])
    'rtt_ms: -4 is below the minimum 0 ms'
    """
    parts = [f"{e.field}: {e.reason}" if e.field else e.reason for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def dead_letter(
    msg: Message, errors: list[FieldError], consumer: str, failed_at: dt.datetime
) -> bytes:
    """The encoded :class:`stream.records.DeadLetter` for ``msg`` (produce it keyed by ``msg.key``)."""
    return encode(
        DeadLetter(
            reason=dead_letter_reason(errors),
            errors=errors,
            original=None if msg.null else msg.value,
            source_topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            consumer=consumer,
            failed_at=failed_at,
        )
    )


def describe_batch(batch: Sequence[Message]) -> str:
    """``topic[partition] first..last`` per partition, for log lines.

    >>> describe_batch([Message("t", 0, 5, None, b"", 0), Message("t", 0, 9, None, b"", 0)])
    't[0] 5..9'
    """
    spans: dict[TopicPartition, list[int]] = {}
    for m in batch:
        span = spans.setdefault(m.topic_partition, [m.offset, m.offset])
        span[0], span[1] = min(span[0], m.offset), max(span[1], m.offset)
    return ", ".join(f"{t}[{p}] {lo}..{hi}" for (t, p), (lo, hi) in sorted(spans.items()))
