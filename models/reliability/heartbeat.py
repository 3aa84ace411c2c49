"""Missed heartbeats: a node that stops reporting is an incident, not a silent gap.

:class:`HeartbeatTracker` learns each node's reporting interval from the gaps between its
samples (event time) and, given a *watermark* (the event time the stream as a whole has
reached; the caller decides it, e.g. the smallest of the partitions' latest event times),
reports every node whose last sample is older than ``factor`` intervals. It also accepts
*unreachable-peer* reports: a neighbour's link record that has no transfer streams left to
its peer says that the peer is gone, often before the peer's own heartbeat is overdue.

It is pure bookkeeping: it returns :class:`Missing` events and the detector turns them into
alert evidence.

Examples
--------
>>> import datetime as dt
>>> t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
>>> hb = HeartbeatTracker(factor=2.5)
>>> for k in range(10):
...     for node in ("a", "b"):
...         if node == "a" or k < 5:               # b stops reporting after 5 samples
...             hb.observe(node, t0 + dt.timedelta(seconds=5 * k))
>>> [(m.node_id, m.silent_s) for m in hb.check(t0 + dt.timedelta(seconds=45))]
[('b', 25.0)]
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["HeartbeatTracker", "Missing"]


@dataclass(frozen=True, slots=True)
class Missing:
    """Evidence that a node is down: silent for ``silent_s`` at ``event_time``."""

    node_id: str
    event_time: dt.datetime
    silent_s: float
    reason: str


class _Beat:
    __slots__ = ("last", "interval", "next_report")

    def __init__(self, last: dt.datetime) -> None:
        self.last = last
        self.interval: float | None = None
        self.next_report: dt.datetime | None = None


class HeartbeatTracker:
    """Per-node reporting intervals and overdue nodes.

    Parameters
    ----------
    factor
        A node is missing once silent for ``factor`` times its usual interval.
    min_timeout_s
        ... and for at least this many seconds.
    alpha
        Weight of a new gap in the interval estimate (exponential average).
    forget_after_s
        A node silent for longer than this is no longer reported (decommissioned).
    """

    def __init__(
        self,
        factor: float = 2.5,
        min_timeout_s: float = 2.0,
        alpha: float = 0.1,
        forget_after_s: float = 6 * 3600.0,
    ) -> None:
        self.factor = factor
        self.min_timeout_s = min_timeout_s
        self.alpha = alpha
        self.forget_after_s = forget_after_s
        self.beats_: dict[str, _Beat] = {}

    def observe(self, node_id: str, event_time: dt.datetime) -> None:
        """A sample of ``node_id`` at ``event_time`` arrived."""
        b = self.beats_.get(node_id)
        if b is None:
            self.beats_[node_id] = _Beat(event_time)
            return
        if event_time <= b.last:
            return  # same tick (another link) or late data
        gap = (event_time - b.last).total_seconds()
        if b.next_report is None:  # a gap after a silence is not a usual interval
            b.interval = gap if b.interval is None else b.interval + self.alpha * (gap - b.interval)
        b.last = event_time
        b.next_report = None

    def is_silent(self, node_id: str, event_time: dt.datetime) -> bool:
        """True if ``node_id`` is known and has not reported at or after ``event_time``."""
        b = self.beats_.get(node_id)
        return b is not None and b.interval is not None and b.last < event_time

    def interval(self, node_id: str) -> float | None:
        """The node's usual reporting interval in seconds (``None`` until learned)."""
        b = self.beats_.get(node_id)
        return None if b is None else b.interval

    def check(self, watermark: dt.datetime) -> list[Missing]:
        """Nodes overdue at ``watermark``; each is reported again once per interval."""
        out: list[Missing] = []
        for node_id, b in self.beats_.items():
            if b.interval is None:
                continue
            silent = (watermark - b.last).total_seconds()
            timeout = max(self.min_timeout_s, self.factor * b.interval)
            if silent < timeout or silent > self.forget_after_s:
                continue
            if b.next_report is not None and watermark < b.next_report:
                continue
            b.next_report = watermark + dt.timedelta(seconds=b.interval)
            out.append(
                Missing(node_id, watermark, silent, f"missed heartbeats: silent for {silent:.0f} s")
            )
        return out
