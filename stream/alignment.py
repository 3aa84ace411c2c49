"""Event-time order across partitions: a backlog, a live stream, six partitions or one file are
handed to the processors in one canonical order, so the same records give the same answers.

A consumer catching up (after a restart, a deploy, a rebalance, a lag spike) gets whole
batches of one partition at a time, so per-process state (global models, calibrators, the
watermark that decides missed heartbeats) would see event time jump back and forth; and even
a merge of the partitions' heads depends on how the keys were spread over the partitions.
:class:`Aligner` therefore sorts: every record waits in one buffer until no partition can
still bring an earlier one, and leaves it in the order ``(event time, key, partition,
offset)``. That order depends only on the records, so a file (one partition) and a topic with
six partitions give the same sequence, and a key's records keep their offset order.

**Watermarks** (Flink's bounded out-of-orderness). Each partition's watermark is the highest
event time it has delivered minus ``allowed_lateness_s``: a partition's later records are
assumed to be no older than that. A record is released once it is older than the lowest
watermark over the partitions that count. A partition stops counting while it is **idle**:
it delivered nothing new for ``idle_ms`` of the loop's waiting time (Kafka Streams'
``max.task.idle.ms``: a stalled fetch cannot hold the stream back forever; the waits are
measured in :attr:`Aligner.stalled_ms`), or it is at its log end (``caught_up``) and has
delivered nothing since it was assigned. Waits while the broker cannot be reached do not count
(:meth:`wait_again`): after an outage every partition waits ``idle_ms`` again, so producers
that reconnect within it leave the order as if nothing had happened. The end of a file
(``flush``) releases everything.

**Records far ahead** (a clock error, a record stamped 2099): one more than ``max_jump_s``
ahead of its partition's newest record is held until the next ``confirm`` records of the
partition say whether event time really jumped (a gap in the data: they agree, all go on) or
not (an outlier: it is handed on through ``reject``, which the loop turns into a dead letter
naming the cause, counted in :attr:`Aligner.rejected`); live, one more than ``max_future_s``
ahead of the wall clock is rejected at once. An outlier never moves a watermark.

**Late records**: a record older than what was already released (its partition was idle, or it
broke the bound) is released at once, in its partition's order, and counted in
:attr:`Aligner.late`: the policy is stated, counted and never silent.

**Offsets**: records leave out of offset order, so :meth:`commit_offsets` gives, per
partition, the lowest offset still buffered (or the next one when none is): everything before
it was handed on. :meth:`positions` adds the offsets already handed on beyond it, so a
restart from a checkpoint can skip exactly those (:meth:`skip`) and repeat nothing.

Pure logic: no Kafka, no clock but the ``now_ms`` the caller passes (the loop passes the time
it has spent waiting in polls, so a long batch does not make a partition look idle).

Examples
--------
>>> a = Aligner(idle_ms=100, allowed_lateness_s=5)
>>> a.add([("p0", 0, "a1", 10.0, "a"), ("p0", 1, "a2", 30.0, "a"),
...        ("p1", 0, "b1", 20.0, "b")], now_ms=0)
>>> a.release(10, now_ms=0)       # p1 may still bring records from 15 s on
[('a1', 10.0)]
>>> a.commit_offsets()
{'p0': 1, 'p1': 0}
>>> a.add([("p0", 2, "a3", 40.0, "a")], now_ms=120)
>>> a.release(10, now_ms=150)     # p1 idle (nothing for 100 ms): p0 alone decides, up to 35 s
[('b1', 20.0), ('a2', 30.0)]
>>> a.release(10, now_ms=150, flush=True)  # the end of the input
[('a3', 40.0)]
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Aligner"]

_NEG_INF = float("-inf")


@dataclass
class _Partition:
    index: int  # order of first sight: a total order for partition names that do not compare
    max_ts: float = _NEG_INF  # highest event time delivered
    delivered_ms: float = 0.0  # loop clock at the last delivery (or the assignment)
    delivered: bool = False  # anything since it was assigned
    next_offset: int | None = None  # after the last offset delivered
    offsets: deque[int] = field(default_factory=deque)  # buffered or released, in offset order
    released: set[int] = field(default_factory=set)  # released offsets still in ``offsets``
    buffered: int = 0
    skip: set[int] = field(default_factory=set)  # handed on before a restart: never again
    # records far ahead of the partition's newest: held until the next ones confirm the jump
    suspects: list[tuple[int, Any, float, str]] = field(default_factory=list)

    def safe_offset(self) -> int | None:
        offsets, released = self.offsets, self.released
        while offsets and offsets[0] in released:
            released.discard(offsets.popleft())
        return offsets[0] if offsets else self.next_offset


class Aligner:
    """One buffer released in canonical event-time order (see the module docstring).

    Parameters
    ----------
    idle_ms
        How long a partition that delivers nothing may hold the others back.
    max_queued
        Records buffered from one partition before :meth:`to_pause` asks to pause it (never
        the partition that holds the watermark back: it must go on to release the rest).
    allowed_lateness_s
        How much older than its partition's newest record a record may be and still be
        sorted into place; also how long (in event time) the newest records wait.
    """

    def __init__(
        self,
        idle_ms: float = 5000.0,
        max_queued: int = 20000,
        allowed_lateness_s: float = 15.0,
        max_jump_s: float = 300.0,
        confirm: int = 3,
        max_future_s: float = 600.0,
        reject: Callable[[Any, str], Any] | None = None,
    ) -> None:
        self.idle_ms, self.max_queued = idle_ms, max_queued
        self.allowed_lateness_s = allowed_lateness_s
        self.max_jump_s, self.confirm, self.max_future_s = max_jump_s, confirm, max_future_s
        self.reject = reject or (lambda item, _reason: item)
        self.rejected = 0
        self.parts: dict[Hashable, _Partition] = {}
        self._heap: list[tuple[float, str, int, int, Hashable, Any]] = []
        self.watermark: float | None = None  # newest event time released
        self.late = 0
        self.released = 0
        self.stalled_ms = 0.0
        self._stall_started: float | None = None
        self._limiting: Hashable | None = None
        self._seen = 0  # partitions ever added (each gets its own index)

    def __len__(self) -> int:
        """Records buffered (those held after a jump included)."""
        return len(self._heap) + sum(len(p.suspects) for p in self.parts.values())

    def _part(self, name: Hashable, now_ms: float) -> _Partition:
        p = self.parts.get(name)
        if p is None:
            self._seen += 1
            p = self.parts[name] = _Partition(self._seen, delivered_ms=now_ms)
        return p

    def assign(self, partitions: Iterable[Hashable], now_ms: float) -> None:
        """Partitions assigned now: a new one holds the others back until it delivers, is idle
        or is known to be at its log end. Only :meth:`forget` (a revoke) drops a partition."""
        for name in partitions:
            self._part(name, now_ms)

    def wait_again(self, now_ms: float) -> None:
        """Nothing could be delivered until now (the broker was unreachable): every partition's
        idle wait starts again, so a silence the partitions did not choose releases nothing."""
        for p in self.parts.values():
            p.delivered_ms = max(p.delivered_ms, now_ms)

    def add(
        self,
        items: Iterable[tuple[Hashable, int, Any, float | None, str]],
        now_ms: float,
        wall_s: float | None = None,
    ) -> None:
        """Buffer ``(partition, offset, item, event time or None, key)`` in offset order. A
        record without an event time (one that failed validation) goes with its partition's
        newest event time. ``wall_s``: the wall clock (live runs), for records stamped in the
        future."""
        for name, offset, item, ts, key in items:
            p = self._part(name, now_ms)
            p.next_offset = offset + 1
            p.delivered, p.delivered_ms = True, now_ms
            if offset in p.skip:  # handed on before the restart that re-read it
                p.skip.discard(offset)
                continue
            p.offsets.append(offset)
            p.buffered += 1
            if ts is not None:
                if wall_s is not None and ts > wall_s + self.max_future_s:
                    self._reject_one(p, name, offset, item, key, f"{ts - wall_s:,.0f} s ahead of the wall clock")
                    continue
                if p.suspects and self._judge(p, name, offset, item, ts, key):
                    continue
                if ts > p.max_ts + self.max_jump_s and p.max_ts > _NEG_INF:
                    p.suspects.append((offset, item, ts, key))  # a jump: confirmed or not?
                    continue
            self._push(p, name, offset, item, ts, key)

    def _push(
        self, p: _Partition, name: Hashable, offset: int, item: Any, ts: float | None, key: str
    ) -> None:
        if ts is None:
            ts = p.max_ts
        elif ts > p.max_ts:
            p.max_ts = ts
        heapq.heappush(self._heap, (ts, key, p.index, offset, name, item))

    def _judge(
        self, p: _Partition, name: Hashable, offset: int, item: Any, ts: float, key: str
    ) -> bool:
        """A record after a jump: near the jump, it confirms it (True: held with it, or all
        released once ``confirm`` agree); near the old event time, the jump was an outlier
        (the suspects are rejected) and the record goes on normally (False)."""
        if abs(ts - p.suspects[-1][2]) <= self.max_jump_s:
            p.suspects.append((offset, item, ts, key))
            if len(p.suspects) > self.confirm:  # the jump and `confirm` records after it
                held, p.suspects = p.suspects, []
                for o, it, t, k in held:
                    self._push(p, name, o, it, t, k)
            return True
        self._reject_suspects(p, name)
        return False

    def _reject_suspects(self, p: _Partition, name: Hashable) -> None:
        held, p.suspects = p.suspects, []
        for o, it, t, k in held:
            self._reject_one(
                p, name, o, it, k,
                f"{t - p.max_ts:,.0f} s ahead of its partition's newest record, and the records "
                f"after it did not follow (a jump over {self.max_jump_s:g} s needs {self.confirm})",
            )  # fmt: skip

    def _reject_one(
        self, p: _Partition, name: Hashable, offset: int, item: Any, key: str, why: str
    ) -> None:
        """Hand the record on (in place: at its partition's newest event time) as rejected."""
        self.rejected += 1
        self._push(p, name, offset, self.reject(item, f"event time {why}"), None, key)

    def skip(self, partition: Hashable, offsets: Iterable[int]) -> None:
        """Offsets of ``partition`` already handed on (from a checkpoint's :meth:`positions`):
        when they are read again they are counted as delivered but not released twice."""
        self._part(partition, 0.0).skip.update(offsets)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop revoked partitions and their buffered records (not committed: their next owner
        reads them again)."""
        gone = {name for name in partitions if name in self.parts}
        if not gone:
            return
        for name in gone:
            del self.parts[name]
        self._heap = [e for e in self._heap if e[4] not in gone]
        heapq.heapify(self._heap)

    def commit_offsets(self) -> dict[Hashable, int]:
        """Per partition, the offset to commit: every record before it was released."""
        out: dict[Hashable, int] = {}
        for name, p in self.parts.items():
            off = p.safe_offset()
            if off is not None:
                out[name] = off
        return out

    def positions(self) -> dict[Hashable, tuple[int, list[int]]]:
        """Per partition ``(commit offset, offsets at or after it released already)``."""
        parts = self.parts
        return {
            name: (off, sorted(parts[name].released | {o for o in parts[name].skip if o >= off}))
            for name, off in self.commit_offsets().items()
        }

    def to_pause(self) -> list[Hashable]:
        """Partitions with a full buffer that do not hold the watermark back."""
        return [
            n
            for n, p in self.parts.items()
            if p.buffered >= self.max_queued and n != self._limiting
        ]

    def to_resume(self) -> list[Hashable]:
        """Partitions whose buffer has drained below half the limit (or that hold it back)."""
        return [
            n
            for n, p in self.parts.items()
            if p.buffered < self.max_queued // 2 or n == self._limiting
        ]

    def threshold(self, now_ms: float, caught_up: Collection[Any] = frozenset()) -> float:
        """Records older than this may go: the lowest watermark over the partitions that
        count (``inf`` when none does)."""
        lowest, limiting = float("inf"), None
        idle = self.idle_ms
        for name, p in self.parts.items():
            if name in caught_up and not p.delivered:
                continue  # nothing here, and nothing on its way
            if now_ms - p.delivered_ms >= idle:
                continue  # idle: it must not hold the stream back forever
            wm = p.max_ts - self.allowed_lateness_s
            if wm < lowest:
                lowest, limiting = wm, name
        self._limiting = limiting
        return lowest

    def release(
        self,
        limit: int,
        now_ms: float,
        flush: bool = False,
        caught_up: Collection[Any] = frozenset(),
    ) -> list[tuple[Any, float]]:
        """Up to ``limit`` ``(item, event time)`` in canonical order; ``flush`` releases
        everything (the end of the input). ``caught_up``: partitions at their log end."""
        out: list[tuple[Any, float]] = []
        if flush:  # the end: a jump nothing confirmed was an outlier
            for name, p in self.parts.items():
                if p.suspects:
                    self._reject_suspects(p, name)
        heap = self._heap
        below = float("inf") if flush else self.threshold(now_ms, caught_up)
        parts = self.parts
        while heap and len(out) < limit and heap[0][0] < below:
            ts, _key, _i, offset, name, item = heapq.heappop(heap)
            p = parts[name]
            p.released.add(offset)
            p.buffered -= 1
            wm = self.watermark
            if wm is None or ts > wm:
                self.watermark = ts
            elif ts < wm:
                self.late += 1
            out.append((item, ts))
        held = (
            not out
            and bool(heap)
            and self._limiting is not None
            and parts[self._limiting].buffered == 0
        )
        self._stall(held, now_ms)
        self.released += len(out)
        return out

    # -- internals -----------------------------------------------------------------------------
    def _stall(self, stalled: bool, now_ms: float) -> None:
        """Time spent with records waiting on a partition that has none buffered."""
        if stalled:
            if self._stall_started is None:
                self._stall_started = now_ms
        elif self._stall_started is not None:
            self.stalled_ms += now_ms - self._stall_started
            self._stall_started = None
