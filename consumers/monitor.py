"""``python -m consumers.monitor``: watch what flows through the pipeline, live.

Reads every topic (telemetry, labels, alerts, predictions, dead-letter) in a throwaway consumer
group that never commits, and prints one status line a second: telemetry events/s, totals per
topic, incidents injected (labels), alerts by status, dead letters and the last dead-letter
reason, and the lag of every processing consumer's group on the telemetry topic (records it has
not committed yet, and how many seconds of the current telemetry rate that is). It only watches:
validation and dead-lettering are the processing consumers' job.

    python -m consumers.monitor                      # live, until Ctrl-C
    python -m consumers.monitor --from-beginning --max-seconds 30 --json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from stream.kafka import Admin, make_admin, make_consumer
from stream.records import Alert, DeadLetter, Prediction
from stream.settings import TOPICS, Settings
from stream.shutdown import handle_signals

log = logging.getLogger("consumers.monitor")
#: The processing consumers whose telemetry lag the status line shows by default.
LAG_CONSUMERS = ("ingest", "reliability", "consensus", "bandwidth", "compression")


@dataclass
class Tally:
    """Running counts of one monitoring session (pure bookkeeping, no I/O)."""

    started: float = field(default_factory=time.monotonic)
    per_topic: collections.Counter[str] = field(default_factory=collections.Counter)
    alerts: collections.Counter[str] = field(default_factory=collections.Counter)
    predictions: collections.Counter[str] = field(default_factory=collections.Counter)
    open_incidents: set[str] = field(default_factory=set)
    nodes: set[bytes] = field(default_factory=set)
    last_dead_letter: str = ""
    undecodable: int = 0
    window: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    lag: dict[str, int] = field(default_factory=dict)
    newest: dict[str, float] = field(default_factory=dict)  # newest event time per topic

    def _seen(self, logical: str, when: dt.datetime) -> None:
        ts = when.timestamp()
        if ts > self.newest.get(logical, float("-inf")):
            self.newest[logical] = ts

    def add(self, logical: str, key: bytes | None, value: bytes) -> None:
        self.per_topic[logical] += 1
        if logical == "telemetry":
            if key is not None:
                self.nodes.add(key)
            # a bad record is the processing consumers' dead letter, not the monitor's problem
            with contextlib.suppress(msgspec.MsgspecError):
                self._seen(logical, _decode_stamp(value).timestamp)
        elif logical == "alerts":
            try:
                alert = msgspec.json.decode(value, type=Alert)
            except msgspec.MsgspecError:
                self.undecodable += 1
                return
            self.alerts[alert.status] += 1
            self._seen(logical, alert.event_time)
            if alert.status == "resolved":
                self.open_incidents.discard(alert.incident_id)
            else:
                self.open_incidents.add(alert.incident_id)
        elif logical == "predictions":
            try:
                pred = msgspec.json.decode(value, type=Prediction)
            except msgspec.MsgspecError:
                self.undecodable += 1
                return
            self.predictions[pred.kind] += 1
            self._seen(logical, pred.event_time)
        elif logical == "dead-letter":
            try:
                self.last_dead_letter = msgspec.json.decode(value, type=DeadLetter).reason
            except msgspec.MsgspecError:
                self.undecodable += 1

    def rate(self, now: float, horizon: float = 5.0) -> float:
        """Telemetry events/s over the last ``horizon`` seconds."""
        self.window.append((now, self.per_topic["telemetry"]))
        while len(self.window) > 1 and now - self.window[0][0] > horizon:
            self.window.popleft()
        (t0, n0), (t1, n1) = self.window[0], self.window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def kinds_text(self) -> str:
        """`` (bandwidth_forecast N, compression_choice M)``: predictions by kind.

        >>> Tally(predictions=collections.Counter(compression_choice=2, bandwidth_forecast=9)).kinds_text()
        ' (bandwidth_forecast 9, compression_choice 2)'
        """
        if not self.predictions:
            return ""
        return " (" + ", ".join(f"{k} {n:,}" for k, n in sorted(self.predictions.items())) + ")"

    def lag_text(self, rate: float) -> str:
        """`` | lag name N (Xs) ...``: records behind and seconds of data at ``rate``.

        >>> Tally(lag={"reliability": 1500, "bandwidth": 0}).lag_text(1000.0)
        ' | lag reliability 1,500 (1.5s) bandwidth 0 (0.0s)'
        """
        if not self.lag:
            return ""
        parts = [
            f"{name} {n:,}" + (f" ({n / rate:.1f}s)" if rate > 0 else "")
            for name, n in self.lag.items()
        ]
        return " | lag " + " ".join(parts)

    def event_lag_text(self, wall: float) -> str:
        """`` | event-time lag telemetry 0.4s alerts 16.0s``: wall clock minus the newest event
        time per topic (how far behind live each stage's output is).

        >>> Tally(newest={"telemetry": 99.5, "alerts": 84.0}).event_lag_text(100.0)
        ' | event-time lag telemetry 0.5s alerts 16.0s'
        """
        parts = [
            f"{name} {wall - self.newest[name]:,.1f}s"
            for name in ("telemetry", "alerts", "predictions")
            if name in self.newest
        ]
        return " | event-time lag " + " ".join(parts) if parts else ""

    def line(self, now: float) -> str:
        t = self.per_topic
        rate = self.rate(now)
        return (
            f"[{now - self.started:6.0f}s] telemetry {rate:8,.0f} ev/s  total {t['telemetry']:,}"
            f"  nodes {len(self.nodes)} | incidents injected {t['labels']:,}"
            f" | alerts {t['alerts']:,} (open now {len(self.open_incidents)})"
            f" | predictions {t['predictions']:,}{self.kinds_text()} | dead letters {t['dead-letter']:,}"
            + (f" (last: {self.last_dead_letter[:60]})" if self.last_dead_letter else "")
            + self.lag_text(rate)
            + self.event_lag_text(time.time())
        )

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(time.monotonic() - self.started, 1),
            "messages": dict(self.per_topic),
            "nodes": len(self.nodes),
            "alerts_by_status": dict(self.alerts),
            "predictions_by_kind": dict(self.predictions),
            "open_incidents": len(self.open_incidents),
            "last_dead_letter_reason": self.last_dead_letter,
            "undecodable": self.undecodable,
            "lag_records": dict(self.lag),
            "event_time_lag_s": {
                k: round(time.time() - v, 1) for k, v in sorted(self.newest.items())
            },
        }


class _Stamp(msgspec.Struct):
    timestamp: dt.datetime


_decode_stamp = msgspec.json.Decoder(_Stamp).decode


def read_lag(admin: Admin, settings: Settings, names: list[str]) -> dict[str, int]:
    """Telemetry records each consumer's group has not committed yet (summed over partitions)."""
    topic = settings.topic("telemetry")
    try:
        return {
            n: sum(admin.consumer_lag(settings.consumer_group(n), topic).values()) for n in names
        }
    except Exception as exc:  # a watch tool keeps watching; the next look-up may succeed
        log.warning("cannot read consumer lag: %s", exc)
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.monitor",
        description="Watch every dwcp-stream topic live: rates, incidents, alerts, dead letters.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--from-beginning", action="store_true", help="count what the topics already hold")
    parser.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0 = until Ctrl-C)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status lines")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout")
    parser.add_argument(
        "--lag",
        default=",".join(LAG_CONSUMERS),
        help="consumers whose group lag on the telemetry topic to show (comma-separated; '' = none)",
    )
    parser.add_argument("--lag-interval", type=float, default=2.0, help="seconds between lag look-ups")
    Settings.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_args(args, os.environ)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    by_wire = {settings.topic(t): t for t in TOPICS}
    consumer = make_consumer(
        settings,
        list(by_wire),
        group_id=f"{settings.consumer_group('monitor')}-{uuid.uuid4().hex[:8]}",
        from_beginning=args.from_beginning,
    )
    lag_names = [n for n in args.lag.split(",") if n]
    admin = make_admin(settings) if lag_names else None
    tally = Tally()
    next_lag = tally.started
    stop = threading.Event()
    deadline = tally.started + args.max_seconds if args.max_seconds > 0 else float("inf")
    next_line = tally.started + args.interval
    tty = sys.stderr.isatty()
    with handle_signals(stop.set):
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                for msg in consumer.poll_batch(max_records=settings.batch_size, timeout_ms=200):
                    tally.add(by_wire[msg.topic], msg.key, msg.value)
                now = time.monotonic()
                if admin is not None and now >= next_lag:
                    tally.lag = read_lag(admin, settings, lag_names)
                    next_lag = now + args.lag_interval
                if now >= next_line:
                    print(("\r" if tty else "") + tally.line(now), end="" if tty else "\n", file=sys.stderr, flush=True)
                    next_line = now + args.interval
        finally:
            consumer.close()
            if admin is not None:
                tally.lag = read_lag(admin, settings, lag_names)
                admin.close()
    if tty:
        print(file=sys.stderr)
    summary = tally.summary()
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        print(f"monitor: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
