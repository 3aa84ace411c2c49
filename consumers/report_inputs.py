"""The report's inputs: labels, alerts, predictions, telemetry and dead letters, from topics or files.

:class:`Collector` decodes each record of the five topics into what the report needs (the
telemetry is kept as compact per-record columns of a few metrics); :func:`from_files` and
:func:`from_kafka` feed it. Reading the topics uses a throw-away consumer group that never
commits, from the earliest offsets, and stops once nothing new arrived for ``idle_s`` seconds
(the topics have caught up) or after ``max_s``.
"""

from __future__ import annotations

import collections
import gzip
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from stream.records import Alert, DeadLetter, IncidentLabel, Prediction, decode
from stream.schema import decode_telemetry
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Telemetry metrics kept for forecasts and incident timelines.
METRICS = (
    "throughput_mbps",
    "packet_loss",
    "rtt_ms",
    "disk_util",
    "mem_util",
    "cpu_util",
    "consensus_latency_ms",
    "uptime_s",
    "error_count",
)


@dataclass
class Inputs:
    """Everything the report is computed from."""

    labels: list[IncidentLabel] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    node: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    peer: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    t: np.ndarray = field(default_factory=lambda: np.array([], dtype=float))
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # consumer -> count
    undecodable: dict[str, int] = field(default_factory=dict)  # topic -> count
    source: str = ""

    @property
    def telemetry_count(self) -> int:
        return len(self.t)


class Collector:
    """Accumulates decoded records; :meth:`finish` returns the :class:`Inputs`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.labels: dict[str, IncidentLabel] = {}  # incident_id -> label (duplicates dropped)
        self.alerts: dict[str, Alert] = {}  # alert_id -> alert (at-least-once duplicates)
        self.predictions: list[Prediction] = []
        self.node: list[str] = []
        self.peer: list[str | None] = []
        self.t: list[float] = []
        self.values: dict[str, list[float]] = {m: [] for m in METRICS}
        self.dead: collections.Counter[str] = collections.Counter()
        self.bad: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, value: bytes) -> None:
        """One record of logical topic ``kind`` (telemetry, labels, alerts, ...)."""
        try:
            if kind == "telemetry":
                rec = decode_telemetry(value)
                self.node.append(rec.node_id)
                self.peer.append(rec.peer_id)
                self.t.append(rec.timestamp.timestamp())
                for m in METRICS:
                    v = getattr(rec, m)
                    self.values[m].append(np.nan if v is None else float(v))
            elif kind == "labels":
                lab = decode(value, IncidentLabel)
                self.labels[lab.incident_id] = lab
            elif kind == "alerts":
                a = decode(value, Alert)
                self.alerts[a.alert_id] = a
            elif kind == "predictions":
                self.predictions.append(decode(value, Prediction))
            elif kind == "dead-letter":
                self.dead[decode(value, DeadLetter).consumer] += 1
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            self.bad[kind] += 1

    def finish(self) -> Inputs:
        return Inputs(
            labels=sorted(self.labels.values(), key=lambda x: (x.start, x.incident_id)),
            alerts=sorted(self.alerts.values(), key=lambda a: (a.event_time, a.alert_id)),
            predictions=self.predictions,
            node=np.array(self.node, dtype=object),
            peer=np.array(self.peer, dtype=object),
            t=np.array(self.t, dtype=float),
            metrics={m: np.array(v, dtype=float) for m, v in self.values.items()},
            dead_letters=dict(self.dead),
            undecodable=dict(self.bad),
            source=self.source,
        )


def _lines(path: str) -> Iterator[bytes]:
    opener: Any = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def from_files(files: dict[str, str | None]) -> Inputs:
    """Read ``{"telemetry": path, "labels": path, "alerts": ..., "predictions": ...,
    "dead-letter": ...}`` (JSON lines, ``.gz`` allowed; ``None`` = not given)."""
    c = Collector("files: " + ", ".join(f"{k}={v}" for k, v in files.items() if v))
    for kind, path in files.items():
        if path:
            for line in _lines(path):
                c.add(kind, line)
    return c.finish()


def from_kafka(settings: Settings, idle_s: float = 5.0, max_s: float = 600.0) -> Inputs:
    """Read the five topics of ``settings`` from the start until idle for ``idle_s``."""
    from stream.kafka import make_consumer
    from stream.settings import TOPICS

    topics = {settings.topic(name): name for name in TOPICS}
    c = Collector(f"kafka {settings.bootstrap_servers} topics {settings.topic_prefix}*")
    consumer = make_consumer(
        settings,
        list(topics),
        group_id=f"{settings.consumer_group('evaluate')}-{uuid.uuid4().hex[:8]}",
        from_beginning=True,
    )
    n = 0
    try:
        start = last = time.monotonic()
        while time.monotonic() - start < max_s:
            batch = consumer.poll_batch(5000, 500)
            now = time.monotonic()
            if batch:
                last = now
                for m in batch:
                    c.add(topics[m.topic], m.value)
                n += len(batch)
            elif not consumer.assignment():
                last = now  # still joining the group: not idle yet
            elif now - last >= idle_s:
                break
        else:
            log.warning("stopped reading after max %.0fs; the report may be incomplete", max_s)
    finally:
        consumer.close()  # never commits: the group is thrown away
    log.info("read %d records from %s", n, settings.topic_prefix + "*")
    return c.finish()
