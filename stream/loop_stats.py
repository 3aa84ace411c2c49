"""Counters of a :class:`stream.loop.BatchLoop` run, read by progress callbacks.

Examples
--------
>>> stats = LoopStats(started=0.0)
>>> stats.records_in, stats.dead_letters = 1200, 3
>>> stats.tick(2.0)
>>> stats.window_rate
600.0
>>> stats.first_record, stats.stopped = 0.5, 2.5  # records from 0.5 s on, stopped at 2.5 s
>>> stats.since_first_record
2.0
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class LoopStats:
    """Counters of one loop run; ``window_rate`` is records/s since the previous ``tick``."""

    records_in: int = 0
    dead_letters: int = 0
    outputs: int = 0
    batches: int = 0
    commits: int = 0
    commit_failures: int = 0
    late_records: int = 0  # older than what was handed on already (event-time alignment)
    rejected_records: int = 0  # dead-lettered for an event time far ahead (alignment)
    queued: int = 0  # records waiting in the alignment queues
    started: float = field(default_factory=time.monotonic)
    first_record: float | None = None  # when the first records were handed to the handler
    stopped: float | None = None
    stop_reason: str = ""
    window_rate: float = 0.0
    _window: tuple[float, int] | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the loop started (until it stopped)."""
        return (self.stopped or time.monotonic()) - self.started

    @property
    def since_first_record(self) -> float | None:
        """Seconds from the first records handled until the loop stopped (or now): the run
        without the start (group join, first fetch); ``None`` before any record."""
        if self.first_record is None:
            return None
        return (self.stopped or time.monotonic()) - self.first_record

    @property
    def rate(self) -> float:
        """Mean records/s over the whole run."""
        return self.records_in / self.elapsed if self.elapsed > 0 else 0.0

    def tick(self, now: float) -> None:
        """Update ``window_rate`` (called before each progress report)."""
        t0, n0 = self._window or (self.started, 0)
        if now > t0:
            self.window_rate = (self.records_in - n0) / (now - t0)
        self._window = (now, self.records_in)
