"""Where a replay goes: Kafka topics (telemetry, labels, dead letters) or JSON-lines files.

The telemetry and labels parts reuse :mod:`producers.sinks`; this adds the dead letters of bad
rows, produced to the dead-letter topic keyed by the row's node id (when it has one) and/or
appended to a JSON-lines file.
"""

from __future__ import annotations

import argparse
from typing import IO

from producers.sinks import FileSink, KafkaSink, MeteredSink, Sink, default_labels_path
from stream.kafka import Producer
from stream.metrics import Health, Metrics, MetricsServer
from stream.records import IncidentLabel
from stream.settings import Settings


class ReplaySink:
    """A :class:`producers.sinks.Sink` plus dead letters (to a topic and/or a file)."""

    def __init__(
        self,
        inner: Sink,
        producer: Producer | None = None,
        dead_letter_topic: str = "",
        dead_letter_file: str | None = None,
    ) -> None:
        self.inner = inner
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self._dl: IO[bytes] | None = open(dead_letter_file, "ab") if dead_letter_file else None  # noqa: SIM115
        self.metrics: Metrics | None = None  # set by serve_metrics

    def labels(self, labels: list[IncidentLabel]) -> None:
        self.inner.labels(labels)

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None:
        self.inner.telemetry(keys, values)

    def dead_letter(self, key: bytes | None, letter: bytes) -> None:
        """Send one encoded :class:`stream.records.DeadLetter`."""
        if self.producer is not None and self.dead_letter_topic:
            self.producer.produce(self.dead_letter_topic, letter, key)
            if self.metrics is not None:
                self.metrics.produced({self.dead_letter_topic: 1})
        if self._dl is not None:
            self._dl.write(letter + b"\n")

    def flush(self) -> None:
        self.inner.flush()
        if self._dl is not None:
            self._dl.flush()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._dl is not None:
                self._dl.close()


def serve_metrics(sink: ReplaySink, settings: Settings) -> MetricsServer:
    """Count what the replay produces and serve it (with health) on ``settings.metrics_port``."""
    metrics, health = Metrics(), Health()
    sink.metrics = metrics
    sink.inner = MeteredSink(
        sink.inner, metrics, health, (settings.topic("telemetry"), settings.topic("labels"))
    )
    return MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port)


def open_sink(args: argparse.Namespace, settings: Settings) -> ReplaySink:
    """The sink of the command line: ``--output`` files, else the Kafka topics of ``settings``."""
    if args.output:
        labels = None if args.no_labels or args.output == "-" else default_labels_path(args.output)
        return ReplaySink(FileSink(args.output, labels), dead_letter_file=args.dead_letter_output)
    from stream.kafka import make_producer  # Kafka only when it is used
    from stream.topics import ensure_topics

    if not args.no_create_topics:
        ensure_topics(settings)
    producer = make_producer(settings)
    inner = KafkaSink(producer, settings.topic("telemetry"), settings.topic("labels"))
    return ReplaySink(inner, producer, settings.topic("dead-letter"), args.dead_letter_output)
