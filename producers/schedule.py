"""When a replay sends what: event-time order (per node as recorded) and wall-clock pacing.

:func:`event_order` merges a recording's rows and its labels into one stream in event-time
order, using a bounded look-ahead window, while keeping every node's rows in file order: a
row's *effective* time is ``max(its event time, its node's previous effective time)``, so a
node whose samples are out of order in the file is sent in file order at the time of the
latest sample seen. A label goes out just before the telemetry of the instant it starts at.
Bad rows (no trusted event time) are passed through at once.

:class:`Pacer` maps effective event times to wall-clock deadlines at a speed-up factor
(``speed=1`` is real time, ``60`` a minute of event time per second, ``0`` as fast as possible).

Examples
--------
>>> from stream.recordings import Row
>>> rows = [Row(1, b"a", b"n1", 10.0, "n1"), Row(2, b"b", b"n2", 5.0, "n2"),
...         Row(3, b"c", b"n1", 8.0, "n1"), Row(4, b"d", b"n2", 12.0, "n2")]
>>> [(t, item.line) for t, item in event_order(rows, [(1, "LABEL")], window_s=60)]
[(5.0, 2), (10.0, 1), (10.0, 3), (12.0, 4), (inf, 1)]
>>> p = Pacer(speed=10.0, start_wall=100.0)
>>> p.deadline(0.0), p.deadline(30.0)   # the first event time anchors the schedule
(100.0, 103.0)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from typing import Any

from stream.recordings import Row

#: Items kept waiting for earlier ones at most (bounds memory on badly ordered files).
MAX_BUFFER = 200_000


class LabelItem:
    """A label with the line of the labels file it came from."""

    __slots__ = ("line", "label")

    def __init__(self, line: int, label: Any) -> None:
        self.line, self.label = line, label


def event_order(
    rows: Iterable[Row],
    labels: Iterable[tuple[int, Any]] = (),
    window_s: float = 300.0,
    label_time: Any = None,
) -> Iterator[tuple[float, Any]]:
    """``(effective event time, item)`` in send order; items are rows or :class:`LabelItem`.

    ``labels`` are ``(line, label)`` pairs whose time is ``label_time(label)`` (default
    ``label.start.timestamp()``; anything without one sorts last). ``window_s`` is how far
    (in event seconds) the file may be out of order across nodes and still be sent in order.
    """
    when = label_time or _label_start
    heap: list[tuple[float, int, int, Any]] = []
    for seq, (line, lab) in enumerate(labels):
        heap.append((when(lab), 0, seq, LabelItem(line, lab)))
    heapq.heapify(heap)
    last: dict[str, float] = {}
    newest = -math.inf
    seq = len(heap)
    for row in rows:
        if row.time is None:  # bad rows go out at once (they become dead letters)
            yield (newest, row)
            continue
        t = max(row.time, last.get(row.node, -math.inf))
        last[row.node] = t
        newest = max(newest, t)
        seq += 1
        heapq.heappush(heap, (t, 1, seq, row))
        horizon = newest - window_s
        while heap and (heap[0][0] <= horizon or len(heap) > MAX_BUFFER):
            t_out, _, _, item = heapq.heappop(heap)
            yield (t_out, item)
    while heap:
        t_out, _, _, item = heapq.heappop(heap)
        yield (t_out, item)


def _label_start(label: Any) -> float:
    try:
        return float(label.start.timestamp())
    except AttributeError:
        return math.inf


class Pacer:
    """Wall-clock deadlines for effective event times at ``speed`` x real time (0 = none)."""

    def __init__(self, speed: float, start_wall: float) -> None:
        if speed < 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number >= 0, got {speed}")
        self.speed = speed
        self.start_wall = start_wall
        self.start_event: float | None = None

    def deadline(self, event_time: float) -> float:
        """Wall time at which the item of ``event_time`` is due (``-inf`` when unpaced)."""
        if self.speed == 0 or not math.isfinite(event_time):
            return -math.inf
        if self.start_event is None:
            self.start_event = event_time
        return self.start_wall + (event_time - self.start_event) / self.speed
