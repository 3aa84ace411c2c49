"""Prometheus metrics and health endpoints of a long-running process.

One :class:`Metrics` per process owns a private registry (never the library's global one, so
several apps in one test process do not collide) with every metric family this package
exports; :meth:`Metrics.processor` hands each processor a view labelled with its name.
Metrics are always kept (a counter increment per batch, not per record); they are only served
when ``Settings.metrics_port`` is set (``--metrics-port``, ``DWCP_METRICS_PORT``; 0 = off):

``/metrics``
    the Prometheus text format (``prometheus-client``'s exposition, so names, escaping and
    content type are the reference implementation's)
``/healthz``
    liveness: 200 while the loop completes an iteration (a poll, empty or not) at least every
    ``liveness_timeout_s``; 503 naming how long it has been stuck otherwise
``/readyz``
    readiness: 200 once the state is restored and partitions are assigned (a file source: once
    it runs); 503 with the reason before

Names follow Prometheus conventions: a ``dwcp_`` prefix, ``_total`` for counters, base units
(``_seconds``, ``_bytes``), labels for what varies (topic, partition, reason, processor).

Examples
--------
>>> m = Metrics()
>>> m.consumed("dwcp.telemetry", 3)
>>> m.dead_letter([FieldError(field="", reason="not valid JSON: x")])
>>> text = m.exposition().decode()
>>> 'dwcp_records_consumed_total{topic="dwcp.telemetry"} 3.0' in text
True
>>> 'dwcp_dead_letters_total{reason="not_json"} 1.0' in text
True
>>> reason_class([FieldError(field="rtt_ms", reason="-4 is below the minimum 0 ms")])
'bad_value'
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream.records import FieldError

__all__ = ["Health", "Metrics", "MetricsServer", "ProcessorMetrics", "reason_class"]

log = logging.getLogger(__name__)

#: Buckets for per-batch times: 1 ms (a small live batch) to 1 min (a blocking first fit).
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Buckets for model fits: a forest refit takes about a second, an LSTM fit minutes.
_FIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

#: ``reason_class`` values: a small fixed set, so the label never explodes.
REASON_CLASSES = (
    "too_large", "empty_value", "null_value", "not_json", "not_object", "bad_row",
    "missing_field", "duplicate_field", "wrong_key", "bad_value", "timestamp_ahead",
    "decoder_error", "other",
)


def reason_class(errors: Sequence[FieldError]) -> str:
    """The class of a dead letter's first reason (one of :data:`REASON_CLASSES`)."""
    if not errors:
        return "other"
    last = errors[-1]
    if last.field == "timestamp" and last.reason.startswith("event time"):
        return "timestamp_ahead"  # the aligner's verdict comes last (stream.alignment)
    e = errors[0]
    r = e.reason
    if not e.field:
        for prefix, cls in (
            ("record is", "too_large"),
            ("empty value", "empty_value"),
            ("null value", "null_value"),
            ("not valid JSON", "not_json"),
            ("expected a JSON object", "not_object"),
            ("row has", "bad_row"),
            ("decoder raised", "decoder_error"),
        ):
            if r.startswith(prefix):
                return cls
        return "other"
    if "missing" in r:
        return "missing_field"
    if r.startswith("given ") and "which one is meant" in r:
        return "duplicate_field"
    if r.startswith("the Kafka key"):
        return "wrong_key"
    return "bad_value"


def _or_nan(x: float | None) -> float:
    return math.nan if x is None else x


class Health:
    """Readiness and liveness of one process (updated by the loop, read by the HTTP thread)."""

    def __init__(self, liveness_timeout_s: float = 300.0) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.restored = False  # processors built (their state restored or fresh)
        self.assigned = False  # partitions assigned (or a file source running)
        self.stopping = False
        self.last_beat = time.monotonic()

    def beat(self, assigned: bool) -> None:
        """One loop iteration completed."""
        self.last_beat = time.monotonic()
        self.assigned = assigned

    def live(self) -> tuple[bool, str]:
        stuck = time.monotonic() - self.last_beat
        if stuck > self.liveness_timeout_s:
            return False, (
                f"the loop has not completed an iteration for {stuck:.0f} s "
                f"(limit {self.liveness_timeout_s:g} s)"
            )
        return True, f"ok: last loop iteration {stuck:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "stopping"
        if not self.restored:
            return False, "restoring state"
        if not self.assigned:
            return False, "no partition assigned yet"
        return True, "ok"


class Metrics:
    """Every metric family of one process, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        if process:  # CPU seconds, resident memory, open fds (Linux /proc)
            ProcessCollector(registry=r)
        self._consumed = Counter(
            "dwcp_records_consumed", "Records consumed (polled and decoded), by topic",
            ["topic"], registry=r,
        )
        self._produced = Counter(
            "dwcp_records_produced", "Records produced and flushed, by topic", ["topic"],
            registry=r,
        )
        self._dead = Counter(
            "dwcp_dead_letters", "Records dead-lettered, by reason class", ["reason"], registry=r
        )
        self.late = Counter(
            "dwcp_records_late", "Records older than what was handed on already (event time)",
            registry=r,
        )
        self.queued = Gauge(
            "dwcp_alignment_queued_records", "Records held for event-time order", registry=r
        )
        self.batch_seconds = Histogram(
            "dwcp_batch_duration_seconds",
            "Time to handle, produce, flush and commit one batch",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.handle_seconds = Histogram(
            "dwcp_handle_duration_seconds", "Time the processors spent on one batch",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.commit_seconds = Histogram(
            "dwcp_commit_duration_seconds", "Time of one synchronous offset commit",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.commit_failures = Counter(
            "dwcp_commit_failures", "Commits the broker refused (a rebalance)", registry=r
        )
        self.lag = Gauge(
            "dwcp_consumer_lag_records",
            "Records not committed yet per partition: end offset minus committed offset",
            ["topic", "partition"], registry=r,
        )
        self.assigned = Gauge(
            "dwcp_assigned_partitions", "Partitions assigned to this member", registry=r
        )
        self.watermark_s: float | None = None
        wm = Gauge(
            "dwcp_event_time_watermark_seconds",
            "Event time (Unix seconds) of the newest record handed to the processors",
            registry=r,
        )
        wm.set_function(lambda: _or_nan(self.watermark_s))
        etl = Gauge(
            "dwcp_event_time_lag_seconds",
            "Wall clock minus the event-time watermark (grows while the loop falls behind)",
            registry=r,
        )
        etl.set_function(lambda: _or_nan(self.event_time_lag()))
        self.last_batch = Gauge(
            "dwcp_last_batch_timestamp_seconds", "Wall clock (Unix seconds) of the last batch",
            registry=r,
        )
        # per processor
        self._alerts = Counter(
            "dwcp_alerts", "Alerts published, by processor, category and status",
            ["processor", "category", "status"], registry=r,
        )
        self._open = Gauge(
            "dwcp_open_incidents", "Incidents open now, by processor", ["processor"], registry=r
        )
        self._model = Gauge(
            "dwcp_model_info", "The model version a processor is publishing with (value 1)",
            ["processor", "version"], registry=r,
        )
        self._fit = Histogram(
            "dwcp_retrain_duration_seconds", "Duration of each model fit or retrain",
            ["processor", "model"], buckets=_FIT_BUCKETS, registry=r,
        )
        self._mae = Gauge(
            "dwcp_forecast_mean_absolute_error",
            "Running mean absolute error per horizon (in the target's unit, named by the "
            "target label), of the published forecast and of the baselines",
            ["processor", "target", "horizon", "model"], registry=r,
        )
        self._tps: dict[str, Any] = {}
        self._lag_now: dict[tuple[str, int], int] = {}

    # -- the loop's ----------------------------------------------------------------------------
    def consumed(self, topic: str, n: int) -> None:
        self._consumed.labels(topic).inc(n)

    def produced(self, counts: Mapping[str, int]) -> None:
        for topic, n in counts.items():
            self._produced.labels(topic).inc(n)

    def dead_letter(self, errors: Sequence[FieldError]) -> None:
        self._dead.labels(reason_class(errors)).inc()

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Lag of the assigned partitions; partitions no longer assigned are dropped."""
        gone = set(self._tps) - {f"{t}\0{p}" for t, p in lag}
        for key in gone:
            topic, part = key.split("\0")
            with contextlib.suppress(KeyError):
                self.lag.remove(topic, part)
            del self._tps[key]
        for (topic, partition), n in lag.items():
            key = f"{topic}\0{partition}"
            child = self._tps.get(key)
            if child is None:
                child = self._tps[key] = self.lag.labels(topic, str(partition))
            child.set(n)
        self.assigned.set(len(lag))
        self._lag_now = dict(lag)

    def event_time_lag(self) -> float | None:
        """Seconds from the event-time watermark to the wall clock (``None`` before a record)."""
        return None if self.watermark_s is None else time.time() - self.watermark_s

    def lag_total(self) -> int | None:
        """Records not committed yet over the assigned partitions (``None``: not known yet)."""
        return sum(self._lag_now.values()) if self._lag_now else None

    def processor(self, name: str) -> ProcessorMetrics:
        return ProcessorMetrics(self, name)

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Current values of the samples called ``name``, keyed by their sorted labels.

        >>> m = Metrics(process=False)
        >>> m.consumed("t", 2)
        >>> m.samples("dwcp_records_consumed_total")
        {(('topic', 't'),): 2.0}
        """
        return {
            tuple(sorted(s.labels.items())): s.value
            for fam in self.registry.collect()
            for s in fam.samples
            if s.name == name
        }

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class ProcessorMetrics:
    """What one processor reports (labelled with its name); see :meth:`Processor.observe`."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._m, self.name = metrics, name
        self._version: str | None = None
        self._fits_seen: dict[str, int] = {}

    def alert(self, category: str, status: str) -> None:
        self._m._alerts.labels(self.name, category or "none", status).inc()

    def open_incidents(self, n: int) -> None:
        self._m._open.labels(self.name).set(n)

    def model_version(self, version: str) -> None:
        version = version or "none"
        if version == self._version:
            return
        if self._version is not None:
            with contextlib.suppress(KeyError):
                self._m._model.remove(self.name, self._version)
        self._version = version
        self._m._model.labels(self.name, version).set(1)

    def fits(self, model: str, count: int, recent: Callable[[int], Sequence[float]]) -> None:
        """Record fits not seen yet: ``count`` fits so far, ``recent(k)`` the last k durations."""
        new = count - self._fits_seen.get(model, 0)
        if new <= 0:
            return
        self._fits_seen[model] = count
        h = self._m._fit.labels(self.name, model)
        for secs in recent(new):
            if secs >= 0:
                h.observe(secs)

    def forecast_error(self, target: str, horizon: int, mae: Mapping[str, float]) -> None:
        """Running MAE at ``horizon`` of each model (``{"published": .., "persistence": ..}``)."""
        for model, value in mae.items():
            self._m._mae.labels(self.name, target, str(horizon), model).set(value)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP in a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        self.metrics, self.health = metrics, health
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = server.metrics.exposition(), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/livez", "/readyz"):
                    ok, why = (server.health.ready if path == "/readyz" else server.health.live)()
                    body, ctype, code = (why + "\n").encode(), "text/plain", 200 if ok else 503
                else:
                    body, ctype, code = b"try /metrics, /healthz or /readyz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("metrics http: " + format, *args)

        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            from stream.errors import SettingsError

            raise SettingsError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(another process on that port? pick another --metrics-port)"
            ) from exc
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", host, self.port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
