"""``python -m consumers.alerts``: follow the alerts topic, for people and scripts.

Reads :class:`stream.records.Alert` records live (default) or from the start
(``--from-beginning``), keeps those that match the filters (minimum severity, region, node,
category, status, source) and prints them as one human line each or as JSON lines
(``--json``). Duplicates of at-least-once delivery (same ``alert_id``) are printed once.

It reads with its own throw-away consumer group unless ``--group-id`` is given, so it never
moves another subscriber's offsets. Records that are not valid alerts go to the dead-letter
topic like everywhere else.

Examples::

    python -m consumers.alerts --from-beginning --severity high
    python -m consumers.alerts --category crash,disk_full --json | jq .incident_id
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import msgspec
import orjson

from stream.errors import DwcpError
from stream.kafka import Message
from stream.loop import LoopStats, Output, run_consumer
from stream.metrics import Metrics
from stream.records import CATEGORIES, SEVERITIES, Alert, FieldError, decode
from stream.settings import Settings

_SEV = {s: i for i, s in enumerate(SEVERITIES)}


def decode_alert(data: bytes) -> tuple[Alert | None, list[FieldError]]:
    """Loop decoder: ``(alert, [])`` or ``(None, reasons)``."""
    try:
        return decode(data, Alert), []
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, [FieldError(field="", reason=f"not an alert: {exc}")]


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show; empty sets mean "any"."""

    min_severity: str = "low"
    regions: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()

    def __call__(self, a: Alert) -> bool:
        return (
            _SEV[a.severity] >= _SEV[self.min_severity]
            and (not self.regions or a.region in self.regions)
            and (not self.nodes or a.node_id in self.nodes)
            and (not self.categories or (a.category or "unknown") in self.categories)
            and (not self.statuses or a.status in self.statuses)
            and (not self.sources or a.source in self.sources)
        )


def format_alert(a: Alert) -> str:
    """One human line per alert.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    >>> a = Alert(alert_id="x", incident_id="3f2a9c1e-0000", node_id="n-007", status="open",
    ...           severity="high", score=0.9991, threshold=0.995, event_time=t, opened_at=t,
    ...           source="reliability", category="disk_full", region="eu-west")
    >>> format_alert(a)
    '2026-01-05T10:00:00Z OPEN     high     n-007 eu-west disk_full score 0.9991 incident 3f2a9c1e (reliability)'
    """
    when = a.event_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [
        when,
        f"{a.status.upper():<8}",
        f"{a.severity:<8}",
        a.node_id,
        a.region or "-",
        a.category or "unknown",
        f"score {a.score:.4f}",
        f"incident {a.incident_id[:8]} ({a.source})",
    ]
    line = " ".join(parts)
    if a.top_metrics:
        line += "  " + ", ".join(
            f"{m.name}={m.value:g} (baseline {m.baseline:g}, z {m.zscore:+.1f})"
            for m in a.top_metrics
        )
    if a.reason and a.status != "open" or (a.reason and not a.top_metrics):
        line += f"  [{a.reason}]"
    return line


class AlertPrinter:
    """Loop handler: filter, de-duplicate and print alerts; produces nothing."""

    def __init__(self, keep: AlertFilter, out: TextIO = sys.stdout, as_json: bool = False) -> None:
        self.keep, self.out, self.as_json = keep, out, as_json
        self.seen: set[str] = set()
        self.printed = 0

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        for _msg, a in batch:
            if a.alert_id in self.seen or not self.keep(a):
                continue
            self.seen.add(a.alert_id)
            if len(self.seen) > 1_000_000:
                self.seen.clear()
            line = (
                orjson.dumps(msgspec.to_builtins(a)).decode() if self.as_json else format_alert(a)
            )
            print(line, file=self.out)
            self.printed += 1
        self.out.flush()
        return []


def status_line(stats: LoopStats, printer: AlertPrinter, metrics: Metrics) -> str:
    """``alerts: 1.2/s  read 840  printed 120  lag 0  event-time lag 16.4 s``."""
    lag, etl = metrics.lag_total(), metrics.event_time_lag()
    return (
        f"alerts: {stats.window_rate:,.1f}/s  read {stats.records_in:,d}  "
        f"printed {printer.printed:,d}  lag {'?' if lag is None else f'{lag:,d}'}  "
        f"event-time lag {'?' if etl is None else f'{etl:,.1f} s'}"
    )


def _set(values: Sequence[str] | None) -> frozenset[str]:
    return frozenset(v.strip() for item in values or () for v in item.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.alerts`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.alerts",
        description="Follow the alerts topic (live, or from the start) and print the alerts that "
        "match the filters, as human lines or JSON lines.",
    )
    p.add_argument("--from-beginning", action="store_true", help="read the topic from the start")
    p.add_argument(
        "--severity", choices=SEVERITIES, default="low", help="minimum severity (default low)"
    )
    p.add_argument(
        "--region", action="append", help="only these regions (comma-separated or repeated)"
    )
    p.add_argument("--node", action="append", help="only these nodes")
    p.add_argument(
        "--category",
        action="append",
        help=f"only these categories ({', '.join(CATEGORIES)}, unknown)",
    )
    p.add_argument("--status", action="append", help="only these statuses (open, update, resolved)")
    p.add_argument(
        "--source", action="append", help="only alerts of these detectors (e.g. reliability)"
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of human lines")
    p.add_argument("--max-records", type=int, help="stop after reading this many alerts")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument(
        "--idle-timeout",
        type=float,
        help="stop after this many seconds without alerts (e.g. once caught up)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=30.0,
        help="seconds between status lines on stderr: alerts/s, printed, consumer lag and "
        "event-time lag (wall clock minus the newest alert's event time); 0: none (default 30)",
    )
    Settings.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        keep = AlertFilter(
            args.severity,
            _set(args.region),
            _set(args.node),
            _set(args.category),
            _set(args.status),
            _set(args.source),
        )
        printer = AlertPrinter(keep, out, args.json)
        metrics = Metrics()
        progress: dict[str, Any] = {}
        if args.interval > 0:
            progress = {
                "on_progress": lambda st: print(status_line(st, printer, metrics), file=sys.stderr),
                "progress_interval": args.interval,
            }
        run_consumer(
            settings,
            [settings.topic("alerts")],
            printer.handle,
            group_id=settings.group_id or f"dwcp-alerts-{uuid.uuid4().hex[:12]}",
            from_beginning=args.from_beginning,
            decoder=decode_alert,
            max_records=args.max_records,
            max_seconds=args.max_seconds,
            idle_timeout=args.idle_timeout,
            metrics=metrics,
            **progress,
        )
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
