"""Per-node volatility of consensus latency: a degraded node's latency turns erratic.

Normal consensus latency wanders slowly: from one sample to the next its log moves by about
0.02 (a random walk with a five-minute memory), while a slow disk, an overloaded leader or
long GC pauses make it jump from sample to sample. A low-severity degradation (x1.3-1.8)
lifts the level no more than the normal wander does, so one window's reconstruction error
barely notices it; the jumps between samples it does show.

:class:`NodeVolatility` keeps, per node, the last ``window`` changes of the log latency and
their robust spread (``1.4826 * median |change|``: a single spike moves a median little),
and divides it by the node's own normal spread: an EWMA of ``sqrt(pi / 2) * |change|``
learned from samples the ratio does not flag (nor any other rule: ``frozen``). A ratio of 1
is normal; a window is flagged at ``ratio``, and only once the recent spread itself reaches
``min_spread`` (log units: 0.05 is about 5% from sample to sample). A degradation's jitter
does not grow with the sampling interval while the normal change does, so the ratio it
reaches falls as samples get sparser; the floor lets the ratio be low enough for 10 s
samples without flagging the small jitters of a node sampled every 2 s.

A sum of level deviations (Page's CUSUM) was tried first and dropped: the normal wander stays
on one side of the baseline for minutes, so a sum over samples flagged 42% of normal windows.

Examples
--------
>>> import numpy as np
>>> v = NodeVolatility(window=8, warm=20)
>>> rng = np.random.default_rng(0)
>>> calm = np.cumsum(0.02 * rng.standard_normal(300))          # a slow random walk
>>> r = v.update(np.zeros(300, np.int64), calm, np.zeros(300, bool))
>>> bool(r[20:].max() < 2.5)
True
>>> jumpy = calm[-1] + 0.3 + 0.08 * rng.standard_normal(20)     # x1.35, erratic
>>> r = v.update(np.zeros(20, np.int64), jumpy, np.zeros(20, bool))
>>> bool(r[-1] > 2.5)
True
"""

from __future__ import annotations

import numpy as np

_SQRT_HALF_PI = float(np.sqrt(np.pi / 2.0))


class NodeVolatility:
    """Ratio of each node's recent to its normal sample-to-sample spread (module docstring).

    Parameters
    ----------
    window
        Changes in the recent spread.
    ratio
        Flag level of the ratio: samples at or above it do not teach the normal spread.
    min_spread
        Smallest recent spread (log units) that may flag: :meth:`update` returns
        ``min(ratio, level * spread / min_spread)``, which reaches ``level`` only when both do.
    alpha
        EWMA weight of the normal spread.
    warm
        A node's first changes only estimate its normal spread (a plain mean); ratios after.
    floor
        Smallest normal spread (log units).
    """

    min_spread = 0.0  # state pickled before the floor existed

    def __init__(
        self,
        window: int = 12,
        ratio: float = 2.0,
        min_spread: float = 0.05,
        alpha: float = 1 / 300,
        warm: int = 30,
        floor: float = 1e-3,
    ) -> None:
        if window < 3 or ratio <= 1.0:
            raise ValueError(
                f"NodeVolatility needs window >= 3 and ratio > 1 (got {window}, {ratio})"
            )
        self.window, self.ratio, self.alpha, self.warm, self.floor = (
            window, ratio, alpha, warm, floor,
        )  # fmt: skip
        self.min_spread = min_spread
        self.last_ = np.zeros(0)
        self.changes_ = np.zeros((0, window))
        self.normal_ = np.zeros(0)
        self.n_ = np.zeros(0, dtype=np.int64)

    def update(self, rows: np.ndarray, x: np.ndarray, frozen: np.ndarray) -> np.ndarray:
        """Add each row's next value (log latency) in order; returns the ratio after each (0
        while the node is new)."""
        if len(rows) and int(rows.max()) >= len(self.n_):
            grow = int(rows.max()) + 1 - len(self.n_) + 16
            self.last_ = np.concatenate([self.last_, np.zeros(grow)])
            self.changes_ = np.concatenate([self.changes_, np.zeros((grow, self.window))])
            self.normal_ = np.concatenate([self.normal_, np.zeros(grow)])
            self.n_ = np.concatenate([self.n_, np.zeros(grow, dtype=np.int64)])
        last, changes, normal, n = self.last_, self.changes_, self.normal_, self.n_
        w, warm = self.window, self.warm
        half = w // 2
        level, per_spread = self.ratio, self.ratio / self.min_spread if self.min_spread else 0.0
        out = np.zeros(len(rows))
        for i, (r, v) in enumerate(zip(rows.tolist(), x.tolist(), strict=True)):
            if not np.isfinite(v):
                continue
            seen = int(n[r])
            n[r] = seen + 1
            if seen == 0:
                last[r] = v
                continue
            change = abs(v - last[r])
            last[r] = v
            changes[r, seen % w] = change
            if seen <= warm:  # a new node: its normal spread first (a plain mean)
                normal[r] += (change * _SQRT_HALF_PI - normal[r]) / seen
                continue
            ring = sorted(changes[r].tolist())  # a median of 12 floats: sorted() beats numpy's
            median = ring[half] if w % 2 else 0.5 * (ring[half - 1] + ring[half])
            spread = 1.4826 * median
            ratio = spread / max(normal[r], self.floor)
            if per_spread:
                ratio = min(ratio, per_spread * spread)
            out[i] = ratio
            if ratio < level and not frozen[i]:
                normal[r] += self.alpha * (change * _SQRT_HALF_PI - normal[r])
        return out

    def score(self, ratios: np.ndarray) -> np.ndarray:
        """Ratios on the alerts' scale (``ratio`` is 0.5, the threshold of every score)."""
        return np.minimum(0.5 * ratios / self.ratio, 0.999)
