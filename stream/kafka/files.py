"""A recording as a consumer, a folder of JSON-lines files as a producer: files through the loop.

:class:`FileConsumer` and :class:`FileProducer` implement the :mod:`stream.kafka` interfaces, so
an offline run (``--from-file``) goes through exactly the loop, validation, dead-lettering and
processors that a Kafka run does. The file is one partition (0) of a pseudo-topic named after
the file; a record's offset is its line number (the CSV header is line 1), so a bad row's dead
letter names the line to look at. Rows the reader already rejected (a CSV cell that is not a
number, a timestamp without an offset) carry their reasons in the ``dwcp-source-errors``
header, which the loop turns into the same dead letter a bad record on the topic gets.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.jsonl").write_text(
...     '{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-1", "rtt_ms": 3}\\n{oops\\n')
>>> src = FileConsumer(d / "r.jsonl")
>>> [(m.topic, m.partition, m.offset, m.key) for m in src.poll_batch(10, 0)]
[('r.jsonl', 0, 1, b'n-1'), ('r.jsonl', 0, 2, None)]
>>> src.poll_batch(10, 0), src.at_end
([], True)
>>> out = FileProducer(d / "out")
>>> out.produce("dwcp.alerts", b'{"a": 1}', b"n-1")
>>> out.flush()
>>> (d / "out" / "dwcp.alerts.jsonl").read_text()
'{"a": 1}\\n'
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import IO

import orjson

from stream.csvmap import ColumnMap
from stream.deadletters import SOURCE_ERRORS
from stream.kafka.base import Consumer, Headers, Message, Producer, TopicPartition
from stream.recordings import Recording, Row
from stream.validation import DEFAULT_MAX_BYTES


class FileConsumer(Consumer):
    """Reads a telemetry recording (``.jsonl``/``.csv``, ``.gz`` too) once, in file order.

    Parameters
    ----------
    path
        The recording.
    column_map
        How CSV columns map onto the schema (default: columns named like schema fields).
    max_bytes
        Rows larger than this are rejected (as on the topic).
    fmt
        ``"jsonl"`` or ``"csv"`` (default: from the file name).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        column_map: ColumnMap | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fmt: str | None = None,
    ) -> None:
        self.recording = Recording(path, fmt=fmt, column_map=column_map, max_bytes=max_bytes)
        self.topic = Path(path).name
        self.at_end = False
        self._rows: Iterator[Row] = self.recording.rows()
        self._committed: int | None = None

    def poll_batch(self, max_records: int, timeout_ms: int) -> list[Message]:
        out = [self._message(row) for row in islice(self._rows, max(max_records, 0))]
        if not out and max_records > 0:
            self.at_end = True
        return out

    def _message(self, row: Row) -> Message:
        ts_ms = int(row.time * 1000) if row.time is not None else 0
        headers: tuple[tuple[str, bytes], ...] = ()
        if row.errors and self.recording.format == "csv":
            # the CSV line itself is the original; the mapper's reasons travel with it
            errors = [{"field": e.field, "reason": e.reason} for e in row.errors]
            headers = ((SOURCE_ERRORS, orjson.dumps(errors)),)
        return Message(self.topic, 0, row.line, row.key, row.value, ts_ms, headers)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if (self.topic, 0) in offsets:
            self._committed = offsets[(self.topic, 0)]

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        return {tp: self._committed if tp == (self.topic, 0) else None for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        return {(self.topic, 0)}

    def close(self) -> None:
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()


class NullProducer(Producer):
    """Counts what is produced per topic (``counts``) and keeps nothing: the sink of a run
    whose outputs are not wanted (learning from history)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.counts[topic] += 1

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


class FileProducer(Producer):
    """Appends each produced value as one line to ``<directory>/<topic>.jsonl`` at ``flush``.

    ``directory=None`` keeps the records in memory only (``records``), e.g. for a run that
    only wants the processors' summaries.
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.records: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self._queued: dict[str, list[bytes]] = defaultdict(list)
        self._files: dict[str, IO[bytes]] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.counts[topic] += 1
        if self.directory is None:
            self.records[topic].append((key, value))
        else:
            self._queued[topic].append(value)

    def flush(self, timeout: float | None = None) -> None:
        if self.directory is None:
            return
        for topic, values in self._queued.items():
            if not values:
                continue
            f = self._files.get(topic)
            if f is None:
                f = self._files[topic] = open(self.directory / f"{topic}.jsonl", "wb")  # noqa: SIM115
            f.write(b"".join(v + b"\n" for v in values))
            f.flush()
            values.clear()

    def close(self) -> None:
        self.flush()
        for f in self._files.values():
            f.close()
        self._files.clear()
