"""The produce loop: simulate -> encode -> sink, with pacing, progress and a clean stop.

Pacing has two optional limits and the slower one wins: ``rate`` (records per second of
wall time) and ``speedup`` (event time may advance at most ``speedup`` times faster than wall
time). With both off the loop runs as fast as it can. Pacing changes only *when* records are
sent, never *what* is sent: the stream for a seed and a set of options is the same at any pace.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from producers.config import FleetConfig
from producers.encode import RecordEncoder
from producers.fleet import Fleet
from producers.sinks import Sink

PACE_SLICES_PER_S = 50  # a rate-paced interval is sent in chunks of rate/50 records


@dataclass
class RunStats:
    """Counters of one run (what the progress line and the summary show)."""

    records: int = 0
    labels: int = 0
    ticks: int = 0
    started: float = field(default_factory=time.monotonic)
    last_event_time: dt.datetime | None = None
    by_category: collections.Counter[str] = field(default_factory=collections.Counter)

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)


@dataclass(frozen=True)
class Limits:
    """When to stop (first one reached wins; all ``None`` = until stopped) and how to pace."""

    count: int | None = None  # records
    duration_s: float | None = None  # wall time
    rate: float = 0.0  # records per wall second, 0 = unlimited
    speedup: float = 0.0  # event seconds per wall second, 0 = unlimited


def _fmt_time(t: dt.datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def progress_line(stats: RunStats, active: int) -> str:
    el = stats.elapsed()
    return (
        f"sent {stats.records:,} events ({stats.records / el:,.0f}/s) | event time "
        f"{_fmt_time(stats.last_event_time)} | incidents {stats.labels} ({active} active) | {el:,.0f}s"
    )


def summary(stats: RunStats, config: FleetConfig) -> str:
    el = stats.elapsed()
    cats = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_category.items())) or "none"
    simulated = stats.ticks * config.interval_s
    return (
        f"done: {stats.records:,} events and {stats.labels} incident labels in {el:,.1f}s "
        f"({stats.records / el:,.0f} events/s); simulated {simulated / 3600:,.2f} h of event time "
        f"from {_fmt_time(config.start)} to {_fmt_time(stats.last_event_time)}; incidents: {cats}"
    )


def run(
    config: FleetConfig,
    sink: Sink,
    limits: Limits,
    stop: threading.Event,
    *,
    progress: TextIO | None = None,
    progress_every_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> RunStats:
    """Produce the synthetic stream into ``sink`` until a limit is reached or ``stop`` is set."""
    fleet = Fleet(config)
    enc = RecordEncoder(fleet.topology)
    stats = RunStats(started=clock())
    t0 = stats.started
    next_progress = t0 + progress_every_s
    tty = bool(progress and progress.isatty())
    chunk = max(1, int(limits.rate / PACE_SLICES_PER_S)) if limits.rate > 0 else 0

    def wait_until(t: float) -> bool:
        """Sleep until monotonic time ``t``; False if stopped or out of time meanwhile."""
        while True:
            if stop.is_set():
                return False
            now = clock()
            if limits.duration_s is not None and now - t0 >= limits.duration_s:
                return False
            if now >= t:
                return True
            time.sleep(min(t - now, 0.1))

    while not stop.is_set():
        if limits.duration_s is not None and clock() - t0 >= limits.duration_s:
            break
        if limits.count is not None and stats.records >= limits.count:
            break
        if limits.speedup > 0 and not wait_until(
            t0 + fleet.tick * config.interval_s / limits.speedup
        ):
            break
        sample = fleet.step()
        stats.ticks += 1
        records, keys = enc.records(sample), enc.keys(sample)
        if limits.count is not None:
            left = limits.count - stats.records
            records, keys = records[:left], keys[:left]
        if sample.labels:
            sink.labels(sample.labels)
            stats.labels += len(sample.labels)
            stats.by_category.update(lab.category for lab in sample.labels)
        values = enc.encode(records)
        if chunk:
            for i in range(0, len(values), chunk):
                if not wait_until(t0 + stats.records / limits.rate):
                    break
                sink.telemetry(keys[i : i + chunk], values[i : i + chunk])
                stats.records += len(values[i : i + chunk])
        else:
            sink.telemetry(keys, values)
            stats.records += len(values)
        if records:
            stats.last_event_time = max(r["timestamp"] for r in records)
        if progress and progress_every_s > 0 and clock() >= next_progress:
            next_progress = clock() + progress_every_s
            line = progress_line(stats, len(fleet.injector.active))
            progress.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            progress.flush()
    if progress and tty:
        progress.write("\n")
    return stats
