"""Event-time alignment across partitions: a backlog is handed to the processors in the order
it would have arrived live, not one partition's hours before the next one's.

A consumer catching up (after a restart, a deploy, a rebalance, a lag spike) gets whole
batches of one partition at a time, so per-process state (global models, calibrators, the
watermark that decides missed heartbeats) would see event time jump back and forth.
:class:`Aligner` keeps one queue per assigned partition, in offset order, and releases records
merged by event time: the next record is always the one with the lowest head event time over
the partitions (Kafka Streams' rule). A partition with an empty queue holds the others back (its
next record may be earlier) until it has been empty for ``idle_ms`` (Kafka Streams'
``max.task.idle.ms``): then it counts as idle and no longer stalls the rest; the wait is
measured in :attr:`Aligner.stalled_ms`. Queues longer than ``max_queued`` ask the loop to pause
their partition (:meth:`Aligner.to_pause`) until they drain, which bounds memory.

Records are never reordered within a partition (offsets are committed in order) and a record
without an event time (one that failed validation) keeps its place in its partition's queue.
**Late records**: a record whose event time is more than ``allowed_lateness_s`` behind the
event time already released (the merged stream's watermark) is released anyway, in its
partition's order, and counted in :attr:`Aligner.late`; processors see event time go back by
at most the lateness otherwise. The policy is stated, counted and never silent.

Pure logic: no Kafka, no clock but the ``now_ms`` the caller passes (the loop passes the time
it has spent waiting in polls, so a long batch does not make a partition look idle).

Examples
--------
>>> a = Aligner(idle_ms=100)
>>> a.add([("p0", "a1", 10.0), ("p0", "a2", 30.0), ("p1", "b1", 20.0)], now_ms=0)
>>> a.release(10, now_ms=0)       # p1 drained: its next record may be earlier than 30
[('a1', 10.0), ('b1', 20.0)]
>>> a.release(10, now_ms=50)      # p1 empty for 50 ms: still waiting
[]
>>> a.release(10, now_ms=150)     # p1 idle: p0 goes on
[('a2', 30.0)]
>>> a.add([("p0", "a3", 40.0)], now_ms=150)
>>> a.release(10, now_ms=150, caught_up={"p1"})  # p1 is at its log end: nothing to wait for
[('a3', 40.0)]
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Container, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Aligner"]


@dataclass
class _Queue:
    items: deque[tuple[Any, float]]
    empty_since_ms: float | None = None


class Aligner:
    """Per-partition queues released in event-time order (see the module docstring).

    Parameters
    ----------
    idle_ms
        How long an empty partition may hold the others back.
    max_queued
        Records queued per partition before :meth:`to_pause` asks to pause it.
    allowed_lateness_s
        Event time a released record may lag the merged watermark before it counts as late.
    """

    def __init__(
        self, idle_ms: float = 5000.0, max_queued: int = 20000, allowed_lateness_s: float = 60.0
    ) -> None:
        self.idle_ms, self.max_queued = idle_ms, max_queued
        self.allowed_lateness_s = allowed_lateness_s
        self.queues: dict[Hashable, _Queue] = {}
        self.watermark: float | None = None
        self.late = 0
        self.released = 0
        self.stalled_ms = 0.0
        self._stall_started: float | None = None

    def __len__(self) -> int:
        return sum(len(q.items) for q in self.queues.values())

    def add(self, items: Iterable[tuple[Hashable, Any, float | None]], now_ms: float) -> None:
        """Queue ``(partition, item, event time or None)`` in arrival (offset) order."""
        for part, item, ts in items:
            q = self.queues.get(part)
            if q is None:
                q = self.queues[part] = _Queue(deque())
            if ts is None:  # no event time: it goes with its partition's previous record
                ts = q.items[-1][1] if q.items else float("-inf")
            q.items.append((item, ts))
            q.empty_since_ms = None

    def assign(self, partitions: Iterable[Hashable], now_ms: float) -> None:
        """Partitions assigned now: a new one starts empty (and holds the others back until it
        is idle or caught up). Queues are dropped only by :meth:`forget` (a revoke), never
        because a partition is missing from one look at the assignment."""
        for part in partitions:
            if part not in self.queues:
                self.queues[part] = _Queue(deque(), empty_since_ms=now_ms)

    def forget(self, partitions: Iterable[Hashable]) -> dict[Hashable, Any]:
        """Drop the queues of revoked partitions (uncommitted: re-read by their next owner);
        returns the first item each dropped queue held (where reading must resume)."""
        first: dict[Hashable, Any] = {}
        for part in partitions:
            q = self.queues.pop(part, None)
            if q is not None and q.items:
                first[part] = q.items[0][0]
        return first

    def to_pause(self) -> list[Hashable]:
        """Partitions whose queue is full (pause fetching them)."""
        return [p for p, q in self.queues.items() if len(q.items) >= self.max_queued]

    def to_resume(self) -> list[Hashable]:
        """Partitions whose queue has drained below half the limit."""
        return [p for p, q in self.queues.items() if len(q.items) < self.max_queued // 2]

    def release(
        self,
        limit: int,
        now_ms: float,
        flush: bool = False,
        caught_up: Container[Any] = frozenset(),
    ) -> list[tuple[Any, float]]:
        """Up to ``limit`` ``(item, event time)`` in event-time order. An empty partition in
        ``caught_up`` (at its log end: live data, nothing to wait for) never holds the others
        back; ``flush`` releases everything (end of a file)."""
        out: list[tuple[Any, float]] = []
        queues = self.queues
        for q in queues.values():
            if not q.items and q.empty_since_ms is None:
                q.empty_since_ms = now_ms
        heap = [(q.items[0][1], i, p) for i, (p, q) in enumerate(queues.items()) if q.items]
        heapq.heapify(heap)
        order = {p: i for i, p in enumerate(queues)}
        blocked = False
        while heap and len(out) < limit:
            if not flush and self._waiting_on_empty(now_ms, caught_up):
                blocked = True
                break
            ts, _i, part = heapq.heappop(heap)
            q = queues[part]
            item, ts = q.items.popleft()
            self._account(ts)
            out.append((item, ts))
            if q.items:
                heapq.heappush(heap, (q.items[0][1], order[part], part))
            else:
                q.empty_since_ms = now_ms
        self._stall(blocked and not out, now_ms)
        self.released += len(out)
        return out

    # -- internals -----------------------------------------------------------------------------
    def _waiting_on_empty(self, now_ms: float, caught_up: Any) -> bool:
        """True while some partition is empty but not idle yet (it may hold earlier records)."""
        idle = self.idle_ms
        for part, q in self.queues.items():
            if q.items or part in caught_up or q.empty_since_ms is None:
                continue
            if now_ms - q.empty_since_ms < idle:
                return True
        return False

    def _account(self, ts: float) -> None:
        if ts == float("-inf"):
            return
        wm = self.watermark
        if wm is None or ts > wm:
            self.watermark = ts
        elif wm - ts > self.allowed_lateness_s:
            self.late += 1

    def _stall(self, stalled: bool, now_ms: float) -> None:
        if stalled:
            if self._stall_started is None:
                self._stall_started = now_ms
        elif self._stall_started is not None:
            self.stalled_ms += now_ms - self._stall_started
            self._stall_started = None
