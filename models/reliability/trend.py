"""Slow trends: a one-sided CUSUM on the smoothed slope of slow node metrics.

A memory leak or a filling disk is not a jump but a ramp that starts small: for minutes its
*level* stays inside the node's normal wander, and its rate of change over one window is
within the normal drift. What sets it apart is that the rise *persists*. Per node and metric
(``mem_util``, ``disk_util``), :class:`TrendTracker` keeps

* a fast EW level (``fast_span`` samples: smooths the per-sample noise),
* the slope ``level - level[lag samples ago]`` as a z-score against the node's own EW
  variance of that slope (learned with a small weight while the slope is unusual, so a
  ramp does not become the new normal), and
* a one-sided CUSUM of that z-score, ``c = min(cap, max(0, c + z - k))``: it stays near 0 on
  normal drift and grows steadily while a metric keeps rising faster than usual.

The node's trend score is the largest CUSUM over its metrics (it is a node-level value: the
links of one sample share it). :class:`~models.reliability.detector.ReliabilityDetector`
calibrates it like the other detectors and adds it to the combination.

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> tr = TrendTracker()
>>> level = 50.0
>>> for k in range(400):                      # normal wander
...     level += rng.gauss(0, 0.15)
...     s = tr.learn_one("n", {"mem_util": level + rng.gauss(0, 0.3)})
>>> normal = s
>>> for k in range(60):                       # +0.1 point per sample: a leak
...     level += 0.1
...     s = tr.learn_one("n", {"mem_util": level + rng.gauss(0, 0.3)})
>>> normal < 5.0 < s
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Container, Mapping

__all__ = ["TrendTracker"]


class _Trend:
    __slots__ = ("level", "past", "var", "n", "cusum")

    def __init__(self, lag: int) -> None:
        self.level: float | None = None
        self.past: deque[float] = deque(maxlen=lag)
        self.var = 0.0
        self.n = 0
        self.cusum = 0.0


class TrendTracker:
    """Per-node CUSUM of smoothed-slope z-scores (see the module docstring).

    Parameters
    ----------
    metrics
        Node metrics to follow (values in their own units).
    fast_span
        Span (samples) of the fast EW level.
    lag
        The slope compares the level with the level ``lag`` samples ago.
    var_span
        Span (samples) of the slope's EW variance.
    k
        CUSUM allowance in z units (drift that is not accumulated).
    cap
        Largest CUSUM value (bounds the time a past ramp takes to be forgotten).
    floor
        Smallest slope standard deviation (in the metric's units) a z-score divides by.
    min_count
        Slopes a node needs before its z-scores count (0 before).
    protect_z, protect_weight
        Slopes with ``z > protect_z`` are learned with weight ``protect_weight``.
    """

    def __init__(
        self,
        metrics: tuple[str, ...] = ("mem_util", "disk_util"),
        fast_span: int = 6,
        lag: int = 24,
        var_span: int = 720,
        k: float = 1.0,
        cap: float = 50.0,
        floor: float = 0.3,
        min_count: int = 60,
        protect_z: float = 2.0,
        protect_weight: float = 0.1,
    ) -> None:
        self.metrics = metrics
        self.fast_span = fast_span
        self.lag = lag
        self.var_span = var_span
        self.k = k
        self.cap = cap
        self.floor = floor
        self.min_count = min_count
        self.protect_z = protect_z
        self.protect_weight = protect_weight
        self.nodes_: dict[str, dict[str, _Trend]] = {}

    def _step(self, st: _Trend, x: float) -> tuple[float, float, float]:
        """(new level, slope, slope z) of a new sample ``x`` (nothing is mutated)."""
        level = x if st.level is None else st.level + 2.0 / (self.fast_span + 1.0) * (x - st.level)
        if len(st.past) < self.lag:
            return level, 0.0, 0.0
        slope = level - st.past[0]
        if st.n < self.min_count:
            return level, slope, 0.0
        return level, slope, slope / math.sqrt(st.var + self.floor * self.floor)

    def score_one(
        self,
        node_id: str,
        values: Mapping[str, float],
        new_tick: bool = True,
        only: Container[str] | None = None,
    ) -> float:
        """The node's trend score if ``values`` (one new sample) were learned; with
        ``new_tick=False`` (another record of a sample already learned) the current one.
        ``only``: the metrics that may contribute (default: all)."""
        states = self.nodes_.get(node_id)
        if states is None:
            return 0.0
        best = 0.0
        for name, st in states.items():
            if only is not None and name not in only:
                continue
            c = st.cusum
            x = values.get(name)
            if new_tick and x is not None:
                _, _, z = self._step(st, x)
                c = min(self.cap, max(0.0, c + z - self.k))
            best = max(best, c)
        return best

    def learn_one(self, node_id: str, values: Mapping[str, float]) -> float:
        """Learn one sample of ``node_id``; returns its trend score."""
        states = self.nodes_.get(node_id)
        if states is None:
            states = self.nodes_[node_id] = {}
        a = 2.0 / (self.var_span + 1.0)
        best = 0.0
        for name in self.metrics:
            x = values.get(name)
            st = states.get(name)
            if x is None:
                if st is not None:
                    best = max(best, st.cusum)
                continue
            if st is None:
                st = states[name] = _Trend(self.lag)
            level, slope, z = self._step(st, x)
            st.cusum = min(self.cap, max(0.0, st.cusum + z - self.k))
            if len(st.past) == self.lag:
                st.n += 1
                w = self.protect_weight if z > self.protect_z else 1.0
                aw = max(a, 1.0 / st.n) * w if st.n < 1.0 / a else a * w
                st.var = (1.0 - aw) * (st.var + aw * slope * slope)
            st.past.append(level)
            st.level = level
            best = max(best, st.cusum)
        return best
