"""Where the synthetic stream goes: JSON-lines files, or Kafka topics (plus a labels file).

A sink takes batches of already-encoded telemetry (Kafka key = node id, value = JSON) and
incident labels. Both sinks write labels before the telemetry of the same interval, so a
reader never sees an incident's records before its label.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import IO, Protocol

import orjson

from producers.encode import encode_label
from stream.kafka import Producer
from stream.metrics import Health, Metrics
from stream.records import IncidentLabel


class Sink(Protocol):
    def labels(self, labels: list[IncidentLabel]) -> None: ...

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def default_labels_path(output: str) -> str:
    """``out/run.jsonl`` -> ``out/run.labels.jsonl`` (labels file next to the telemetry)."""
    p = Path(output)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return str(p.with_name(f"{stem}.labels.jsonl"))


class LabelsFile:
    """Appends labels as JSON lines and flushes each batch (they are few and precious)."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, labels: list[IncidentLabel]) -> None:
        if labels:
            self._f.write(b"".join(encode_label(x) + b"\n" for x in labels))
            self._f.flush()

    def close(self) -> None:
        self._f.close()


class FileSink:
    """Telemetry to a JSON-lines file (``-`` = stdout), labels to an optional JSON-lines file."""

    def __init__(self, output: str, labels_output: str | None) -> None:
        if output == "-":
            self._f: IO[bytes] = sys.stdout.buffer
            self._own = False
        else:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(output, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
            self._own = True
        self._labels = LabelsFile(labels_output) if labels_output else None

    def labels(self, labels: list[IncidentLabel]) -> None:
        if self._labels:
            self._labels.write(labels)

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None:
        if values:
            self._f.write(b"\n".join(values) + b"\n")

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._f.close()
        if self._labels:
            self._labels.close()


class KafkaSink:
    """Telemetry and labels to their topics, keyed by node id; labels optionally to a file too."""

    def __init__(
        self,
        producer: Producer,
        telemetry_topic: str,
        labels_topic: str,
        labels_output: str | None = None,
    ) -> None:
        self.producer = producer
        self.telemetry_topic = telemetry_topic
        self.labels_topic = labels_topic
        self._labels = LabelsFile(labels_output) if labels_output else None

    def labels(self, labels: list[IncidentLabel]) -> None:
        for lab in labels:
            self.producer.produce(self.labels_topic, encode_label(lab), key=lab.node_id.encode())
        if self._labels:
            self._labels.write(labels)

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None:
        produce, topic = self.producer.produce, self.telemetry_topic
        for key, value in zip(keys, values, strict=True):
            produce(topic, value, key=key)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        try:
            self.producer.flush()
        finally:
            self.producer.close()
            if self._labels:
                self._labels.close()


class MeteredSink:
    """A sink that counts what it passes on (``dwcp_records_produced_total`` per topic, the
    event-time watermark of the newest telemetry) and reports each call as a health beat."""

    def __init__(self, inner: Sink, metrics: Metrics, health: Health, topics: tuple[str, str]) -> None:
        self.inner, self.metrics, self.health = inner, metrics, health
        self.telemetry_topic, self.labels_topic = topics
        health.restored = True

    def labels(self, labels: list[IncidentLabel]) -> None:
        self.inner.labels(labels)
        self.metrics.produced({self.labels_topic: len(labels)})

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None:
        self.inner.telemetry(keys, values)
        if values:
            self.metrics.produced({self.telemetry_topic: len(values)})
            with contextlib.suppress(Exception):  # a deliberately corrupted record (--bad-rate)
                when = dt.datetime.fromisoformat(orjson.loads(values[-1])["timestamp"])
                self.metrics.watermark_s = when.timestamp()
        self.health.beat(assigned=True)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
