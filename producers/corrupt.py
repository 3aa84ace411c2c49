"""Malformed records on purpose, to exercise dead-letter handling end to end.

:class:`CorruptingSink` wraps any sink and, with probability ``rate`` per record (seeded, so
the same run corrupts the same records), replaces a record's bytes with one of the kinds of
bad input every consumer must survive: not JSON, a wrong type, a missing required field, a
NaN, an out-of-range value or an oversized record. The Kafka key is kept.

Examples
--------
>>> from stream.validation import validate_telemetry
>>> good = b'{"timestamp":"2026-01-05T00:00:00Z","node_id":"n-001","rtt_ms":1.5}'
>>> for kind in KINDS:
...     _, errors = validate_telemetry(corrupt(good, kind))
...     print(f"{kind:13} -> {errors[0].field or '(record)'}: {errors[0].reason[:42]}")
not-json      -> (record): not valid JSON: Unterminated string starti
wrong-type    -> rtt_ms: expected a number, got str 'fast'
missing-node  -> node_id: required field is missing or null
nan           -> rtt_ms: NaN is not a finite number
out-of-range  -> packet_loss: 7.5 is above the maximum 1 fraction
oversized     -> (record): record is 70080 bytes, over the limit of 6
"""

from __future__ import annotations

import random

import orjson

from producers.sinks import Sink
from stream.records import IncidentLabel

KINDS = ("not-json", "wrong-type", "missing-node", "nan", "out-of-range", "oversized")


def corrupt(value: bytes, kind: str) -> bytes:
    """``value`` (a valid telemetry record) turned into one kind of bad record."""
    if kind == "not-json":
        return value[: len(value) // 2]
    rec = orjson.loads(value)
    if kind == "wrong-type":
        rec["rtt_ms"] = "fast"
    elif kind == "missing-node":
        del rec["node_id"]
    elif kind == "nan":
        rec["rtt_ms"] = 0.0
        return orjson.dumps(rec).replace(b'"rtt_ms":0.0', b'"rtt_ms":NaN')
    elif kind == "out-of-range":
        rec["packet_loss"] = 7.5
    elif kind == "oversized":
        rec["padding"] = "x" * 70_000
    else:
        raise ValueError(f"unknown corruption kind {kind!r} (known: {', '.join(KINDS)})")
    return orjson.dumps(rec)


class CorruptingSink:
    """A sink that corrupts a seeded fraction ``rate`` of the telemetry passing through."""

    def __init__(self, inner: Sink, rate: float, seed: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"corruption rate must be in [0, 1], got {rate}")
        self.inner, self.rate = inner, rate
        self.rng = random.Random(seed)
        self.corrupted = 0

    def labels(self, labels: list[IncidentLabel]) -> None:
        self.inner.labels(labels)

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None:
        out = list(values)
        for i in range(len(out)):
            if self.rng.random() < self.rate:
                out[i] = corrupt(out[i], self.rng.choice(KINDS))
                self.corrupted += 1
        self.inner.telemetry(keys, out)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
