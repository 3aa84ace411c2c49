"""Putting scores of different detectors on one scale, and combining them.

A raw anomaly score (a Half-Space Trees mass, an isolation depth, a z-score) means nothing
across detectors. :class:`TailQuantile` maps a raw score to its *quantile among recent
normal-looking scores*: 0.5 is a typical record, 0.99 one that only 1% of normal records
reach. Beyond the empirical 99th percentile the tail is extrapolated with an exponential fit
(peaks over threshold), so scores keep growing smoothly towards 1 instead of saturating at
the largest value seen. Only scores the caller marks as normal are learned, so an incident
does not shift the scale it is measured on.

:class:`ScoreCombiner` turns the calibrated scores of several detectors into one score in
[0, 1]: each calibrated score ``u`` becomes a *surprise* ``-log10(1 - u)`` (2 = a 1-in-100
record), the surprises are combined with weights, and the combination is calibrated again,
so the final score is itself a quantile among normal records and a fixed threshold on it is
an adaptive threshold on the raw scores.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cal = TailQuantile(window=2000, refresh=100)
>>> for x in rng.normal(size=3000):
...     cal.learn_one(float(x))
>>> [round(cal.score_one(x), 3) for x in (0.0, 1.0, 2.33, 4.0)]
[0.515, 0.841, 0.993, 1.0]
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["TailQuantile", "ScoreCombiner", "surprise", "surprises"]

_MAX_SURPRISE = 12.0


def surprise(u: float) -> float:
    """``-log10(1 - u)``, capped at 12: how rare a calibrated score ``u`` is, in decades.

    >>> round(surprise(0.9), 6), round(surprise(0.999), 6)
    (1.0, 3.0)
    """
    if u >= 1.0:
        return _MAX_SURPRISE
    return min(_MAX_SURPRISE, max(0.0, -math.log10(1.0 - u)) + 0.0)


@numba.njit(cache=True, nogil=True)
def surprises(u: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`surprise` of every value, bit for bit: the same libm ``log10`` and the same
    comparisons as Python's ``min`` and ``max``
    (``tests/models/test_reliability_calibration.py``)."""
    out = np.empty(u.size)
    for i in range(u.size):
        x = u[i]
        if x >= 1.0:
            out[i] = _MAX_SURPRISE
            continue
        v = -math.log10(1.0 - x)
        if not v > 0.0:  # max(0.0, v) keeps 0.0 unless v is larger (nan, -0.0: 0.0)
            v = 0.0
        out[i] = v if v < _MAX_SURPRISE else _MAX_SURPRISE
    return out


class TailQuantile:
    """Streaming quantile calibration with an exponential upper tail.

    Parameters
    ----------
    window
        How many recent normal scores define the scale (a ring buffer).
    refresh
        The sorted view of the window is rebuilt every ``refresh`` learned scores.
    tail
        Share of the window treated as the tail (fit of the exponential).
    min_count
        Scores learned before calibration starts; before that :meth:`score_one` returns 0.5.
    mid_rank
        Ties count half (the quantile of a value equal to many normal scores is the middle of
        their ranks, not the top): for scores with a mass point, e.g. a CUSUM that is 0 most
        of the time, where the top rank would call every typical record a 1-in-n one.
    min_scale
        Smallest scale of the exponential tail, in the raw score's units. ``None`` (the
        default): a tail of equal values (a flat input, or a detector that reports one value
        until it is fitted) has no scale, and a score above it gets **no opinion** (0.5, as
        before ``min_count``) instead of 1.0; the window is then rebuilt at every learned
        score until its tail has a spread. Without this, one new value above a flat window
        scores 1.0, is never learned, and the scale never recovers.
    """

    def __init__(
        self,
        window: int = 20_000,
        refresh: int = 500,
        tail: float = 0.01,
        min_count: int = 200,
        mid_rank: bool = True,
        min_scale: float | None = None,
    ) -> None:
        self.window = window
        self.refresh = refresh
        self.tail = tail
        self.min_count = min_count
        self.mid_rank = mid_rank
        self.min_scale = min_scale
        self.buf_ = np.zeros(window)
        self.n_ = 0
        self._since = 0
        self._sorted = np.zeros(0)
        self._edge = math.inf
        self._scale = 1.0
        self._flat = False  # the tail has no spread (and no min_scale): no opinion above it

    def learn_one(self, x: float) -> None:
        """Add one normal score."""
        if not math.isfinite(x):
            return
        self.buf_[self.n_ % self.window] = x
        self.n_ += 1
        self._since += 1
        if (
            self._since >= self.refresh
            or (self.n_ == self.min_count and self._sorted.size == 0)
            or (self._flat and x != self._edge)
        ):
            self._rebuild()

    def learn_exact(self, xs: list[float]) -> None:
        """:meth:`learn_one` of each value in order, the buffer written at once: for values
        learned within :meth:`stable_for` (the scale can change only after the last of them,
        so rebuilding once at the end is the same); more values go one at a time."""
        vals = [x for x in xs if math.isfinite(x)]
        k = len(vals)
        if k <= 1 or self._flat or k > self.stable_for():
            for x in vals:
                self.learn_one(x)
            return
        w, start = self.window, self.n_ % self.window
        if k >= w:  # only the last window's worth stays, where learn_one would put it
            idx = (start + np.arange(k - w, k)) % w
            self.buf_[idx] = vals[k - w :]
        else:
            first = min(k, w - start)
            self.buf_[start : start + first] = vals[:first]
            self.buf_[: k - first] = vals[first:]
        before = self.n_
        self.n_ += k
        self._since += k
        if self._since >= self.refresh or (
            before < self.min_count <= self.n_ and self._sorted.size == 0
        ):
            self._rebuild()

    def learn_many(self, xs: np.ndarray) -> None:
        """Add many normal scores (same result as :meth:`learn_one` in a loop)."""
        for x in np.asarray(xs, dtype=float):
            self.learn_one(float(x))

    def _rebuild(self) -> None:
        self._since = 0
        n = min(self.n_, self.window)
        if n < self.min_count:
            return
        s = np.sort(self.buf_[:n])
        self._sorted = s
        k = max(1, int(round(n * self.tail)))
        self._edge = float(s[n - k - 1]) if n > k else float(s[0])
        excess = float((s[n - k :] - self._edge).mean())
        self._flat = excess <= 0.0 and self.min_scale is None
        self._scale = max(excess, self.min_scale or 1e-9)

    def score_one(self, x: float) -> float:
        """Quantile of ``x`` among the recent normal scores, in [0, 1]."""
        s = self._sorted
        if s.size == 0:
            return 0.5
        if not math.isfinite(x):
            return 1.0 if x > 0 else 0.0
        if x <= self._edge:
            hi = float(s.searchsorted(x, side="right"))  # the method: no np.* dispatch
            if self.mid_rank:
                return 0.5 * (hi + float(s.searchsorted(x, side="left"))) / s.size
            return hi / s.size
        if self._flat:
            return 0.5
        return 1.0 - self.tail * math.exp(-(x - self._edge) / self._scale)

    def stable_for(self) -> int:
        """How many more records the current scale scores: the next ``stable_for()`` records,
        each scored and then learned (or not) one after another, get the scores
        :meth:`score_exact` gives them now, because the scale can change no earlier than after
        the last of them is learned. At least 1."""
        if self._flat:
            return 1  # any learned value that differs from the tail rebuilds
        k = self.refresh - self._since
        if self._sorted.size == 0 and self.n_ < self.min_count:
            k = min(k, self.min_count - self.n_)
        return max(1, k)

    def score_exact(self, xs: np.ndarray) -> np.ndarray:
        """:meth:`score_one` of every value, bit for bit: numpy for the ranks (the same IEEE
        operations in the same order), :meth:`score_one` itself above the tail's edge (its
        ``math.exp``) and for values that are not finite."""
        xs = np.asarray(xs, dtype=float)
        s = self._sorted
        if s.size == 0:
            return np.full(xs.shape, 0.5)
        hi = s.searchsorted(xs, side="right").astype(float)
        if self.mid_rank:
            out = 0.5 * (hi + s.searchsorted(xs, side="left")) / s.size
        else:
            out = hi / s.size
        for i in np.flatnonzero(~(xs <= self._edge)):  # the tail, nan and +inf
            out[i] = self.score_one(float(xs[i]))
        return out

    def score_many(self, xs: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`score_one` (the same up to rounding; :meth:`score_exact` is exact)."""
        xs = np.asarray(xs, dtype=float)
        s = self._sorted
        if s.size == 0:
            return np.full(xs.shape, 0.5)
        low = np.searchsorted(s, xs, side="right") / s.size
        if self.mid_rank:
            low = 0.5 * (low + np.searchsorted(s, xs, side="left") / s.size)
        high = 1.0 - self.tail * np.exp(-np.maximum(xs - self._edge, 0.0) / self._scale)
        if self._flat:
            high = np.full(xs.shape, 0.5)
        out = np.where(xs <= self._edge, low, high)
        return np.nan_to_num(out, nan=1.0)

    def __getstate__(self) -> dict[str, object]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("mid_rank", False)
        state.setdefault("min_scale", 1e-9)  # from before: a flat tail kept a tiny scale
        state.setdefault("_flat", False)
        self.__dict__.update(state)


class ScoreCombiner:
    """Weighted combination of calibrated detector scores, calibrated again.

    Parameters
    ----------
    weights
        ``{detector name: weight}``; the combined surprise is the weighted mean of the
        detectors' surprises plus ``max_weight`` times the largest one.
    max_weight
        Weight of the single most surprised detector (one detector may see what the
        others cannot).
    mean_only
        Detectors that count in the weighted mean but never as the most surprised one (a
        detector with a heavier tail than the others would otherwise decide alone too often).
    window, refresh, mid_rank
        Of the final :class:`TailQuantile`.

    Examples
    --------
    >>> comb = ScoreCombiner({"a": 1.0, "b": 1.0})
    >>> comb.raw({"a": 0.99, "b": 0.5}) > comb.raw({"a": 0.9, "b": 0.5})
    True
    """

    def __init__(
        self,
        weights: dict[str, float],
        max_weight: float = 1.0,
        window: int = 5000,
        refresh: int = 250,
        mid_rank: bool = True,
        mean_only: tuple[str, ...] = (),
    ) -> None:
        self.weights = dict(weights)
        self.mean_only = tuple(mean_only)
        self.max_weight = max_weight
        self.window = window
        self.refresh = refresh
        self.final_ = TailQuantile(window=window, refresh=refresh, mid_rank=mid_rank)

    def raw(self, calibrated: dict[str, float]) -> float:
        """The combined surprise of calibrated scores (missing detectors count 0)."""
        total = wsum = top = 0.0
        for name, w in self.weights.items():
            s = surprise(calibrated.get(name, 0.5))
            total += w * s
            wsum += w
            if name not in self.mean_only:
                top = max(top, s)
        return total / max(wsum, 1e-12) + self.max_weight * top

    def raw_exact(self, calibrated: dict[str, np.ndarray], n: int) -> np.ndarray:
        """:meth:`raw` of ``n`` records at once, bit for bit (each detector's calibrated
        scores an array; surprises with ``math.log10``, sums in :meth:`raw`'s order)."""
        total = np.zeros(n)
        top = np.zeros(n)
        wsum = 0.0
        for name, w in self.weights.items():
            u = calibrated.get(name)
            if u is None:
                s = np.full(n, surprise(0.5))
            else:
                s = surprises(np.ascontiguousarray(u, dtype=float))
            total = total + w * s
            wsum += w
            if name not in self.mean_only:
                top = np.maximum(top, s)
        return total / max(wsum, 1e-12) + self.max_weight * top

    def score_one(self, calibrated: dict[str, float]) -> float:
        """The final score in [0, 1] (a quantile among normal records)."""
        return self.final_.score_one(self.raw(calibrated))

    def learn_one(self, calibrated: dict[str, float]) -> None:
        """Learn a normal record's calibrated scores."""
        self.final_.learn_one(self.raw(calibrated))

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("mean_only", ())
        self.__dict__.update(state)
