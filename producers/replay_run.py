"""The replay loop: read -> order -> pace -> send, with a progress bar and dead letters.

Pacing changes only *when* records are sent, never *what*: at any ``speed`` the same records
go to the same topics with the same keys, in the same per-node order.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from producers.schedule import LabelItem, Pacer, event_order
from stream.deadletters import dead_letter, dead_letter_reason
from stream.kafka import Message
from stream.recordings import Recording, Row
from stream.records import IncidentLabel

CONSUMER_NAME = "producers.replay"
SEND_CHUNK = 1000  # records handed to the sink at once when nothing is due later
FLUSH_EVERY_S = 5.0  # confirm deliveries (and surface errors) at least this often


class ReplayTarget(Protocol):
    def labels(self, labels: list[IncidentLabel]) -> None: ...

    def telemetry(self, keys: list[bytes], values: list[bytes]) -> None: ...

    def dead_letter(self, key: bytes | None, letter: bytes) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: ``speed`` x real time (0 = as fast as possible), look-ahead, progress."""

    speed: float = 1.0
    window_s: float = 300.0
    progress_every_s: float = 1.0
    max_errors_shown: int = 20


@dataclass
class ReplayStats:
    """Counters of one replay (what the progress bar and the summary show)."""

    records: int = 0
    labels: int = 0
    bad_rows: int = 0
    bad_labels: int = 0
    first_event: float | None = None
    last_event: float | None = None
    max_lag_s: float = 0.0  # how far behind the schedule a record was sent at worst
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None

    def elapsed(self) -> float:
        end = self.stopped if self.stopped is not None else time.monotonic()
        return max(end - self.started, 1e-9)

    def add(self, other: ReplayStats) -> None:
        """Accumulate another file's counters (for a multi-file summary)."""
        self.records += other.records
        self.labels += other.labels
        self.bad_rows += other.bad_rows
        self.bad_labels += other.bad_labels
        self.max_lag_s = max(self.max_lag_s, other.max_lag_s)
        firsts = [t for t in (self.first_event, other.first_event) if t is not None]
        lasts = [t for t in (self.last_event, other.last_event) if t is not None]
        self.first_event = min(firsts, default=None)
        self.last_event = max(lasts, default=None)
        self.stopped = time.monotonic()


def _fmt(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress_bar(fraction: float, stats: ReplayStats, width: int = 24) -> str:
    """``[#####-----]  40% | 1,200 records ...``: one line of the progress bar."""
    done = int(round(fraction * width))
    el = stats.elapsed()
    eta = f" | ETA {el * (1 - fraction) / fraction:,.0f}s" if 0.02 < fraction < 1 else ""
    return (
        f"[{'#' * done}{'-' * (width - done)}] {fraction:4.0%} | {stats.records:,} records, "
        f"{stats.labels} labels, {stats.bad_rows + stats.bad_labels} bad | event time "
        f"{_fmt(stats.last_event)} | {stats.records / el:,.0f}/s | {el:,.0f}s{eta}"
    )


def summary(stats: ReplayStats, what: str) -> str:
    """The closing line of a replay."""
    el = stats.elapsed()
    span = (
        (stats.last_event - stats.first_event) / 3600.0
        if stats.first_event is not None and stats.last_event is not None
        else 0.0
    )
    return (
        f"replay {what}: {stats.records:,} records and {stats.labels} labels in {el:,.1f}s "
        f"({stats.records / el:,.0f} records/s); {stats.bad_rows} bad rows and "
        f"{stats.bad_labels} bad label lines sent to the dead-letter topic; event time "
        f"{_fmt(stats.first_event)} .. {_fmt(stats.last_event)} ({span:,.2f} h); "
        f"max lag behind schedule {stats.max_lag_s:.3f}s"
    )


def replay(
    recording: Recording,
    sink: ReplayTarget,
    options: ReplayOptions,
    stop: Any,
    *,
    labels: Sequence[tuple[int, IncidentLabel]] = (),
    bad_labels: Sequence[Row] = (),
    labels_path: str | None = None,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayStats:
    """Replay ``recording`` (and ``labels``) into ``sink`` until done or ``stop.is_set()``."""
    stats = ReplayStats(started=clock())
    tty = bool(out and out.isatty())
    next_progress = stats.started + options.progress_every_s
    shown = 0
    keys: list[bytes] = []
    values: list[bytes] = []
    last_flush = stats.started

    def report(path: str, row: Row) -> None:
        nonlocal shown
        letter = dead_letter(
            Message(f"file:{path}", -1, row.line, row.key, row.value, 0),
            row.errors,
            CONSUMER_NAME,
            dt.datetime.now(dt.UTC),
        )
        sink.dead_letter(row.key, letter)
        if out is not None and shown < options.max_errors_shown:
            shown += 1
            clear = "\r\x1b[K" if tty else ""
            out.write(f"{clear}{path}:{row.line}: bad row: {dead_letter_reason(row.errors)}\n")

    def send() -> None:
        nonlocal keys, values, last_flush
        if values:
            sink.telemetry(keys, values)
            keys, values = [], []
        if clock() - last_flush >= FLUSH_EVERY_S:
            sink.flush()
            last_flush = clock()

    def progress(force: bool = False) -> None:
        nonlocal next_progress
        if out is None or options.progress_every_s <= 0:
            return
        now = clock()
        if force or now >= next_progress:
            next_progress = now + options.progress_every_s
            line = progress_bar(recording.fraction() if not force else 1.0, stats)
            out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            out.flush()

    def wait_until(due: float) -> bool:
        """Hand over what is pending, then sleep until ``due``; False if stopped meanwhile."""
        now = clock()
        if due <= now:
            stats.max_lag_s = (
                max(stats.max_lag_s, now - due) if math.isfinite(due) else stats.max_lag_s
            )
            return True
        send()
        while not stop.is_set():
            now = clock()
            if now >= due:
                return True
            progress()
            sleep(min(due - now, 0.1))
        return False

    for row in bad_labels:
        stats.bad_labels += 1
        report(labels_path or "labels", row)
    pacer = Pacer(options.speed, clock())
    for t, item in event_order(recording.rows(), labels, options.window_s):
        if stop.is_set():
            break
        if isinstance(item, LabelItem):
            if not wait_until(pacer.deadline(t)):
                break
            send()  # telemetry before this label's instant goes first
            sink.labels([item.label])
            stats.labels += 1
        elif item.errors:
            stats.bad_rows += 1
            report(recording.path, item)
        else:
            if not wait_until(pacer.deadline(t)):
                break
            keys.append(item.key)  # type: ignore[arg-type]
            values.append(item.value)
            stats.records += 1
            if stats.first_event is None:
                stats.first_event = t
            stats.last_event = t
            if len(values) >= SEND_CHUNK:
                send()
        progress()
    send()
    sink.flush()
    stats.stopped = clock()
    progress(force=True)
    if out is not None and tty and options.progress_every_s > 0:
        out.write("\n")
    if out is not None and shown < stats.bad_rows + stats.bad_labels:
        out.write(f"... {stats.bad_rows + stats.bad_labels - shown} more bad rows not shown\n")
    return stats
