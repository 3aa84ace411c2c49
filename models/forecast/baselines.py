"""Persistence and EWMA forecasts: the baselines every bandwidth forecast is scored against.

Both forecast the same value for every horizon: persistence the latest observation, EWMA the
exponentially weighted mean of the link's observations (``ewma = alpha * x + (1 - alpha) *
ewma``). They run on the same stream as the LSTM and are scored on the same targets.

Examples
--------
A level with multiplicative noise: the EWMA averages the noise away, persistence carries it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = 100.0 * (1.0 + 0.05 * rng.standard_normal(2000))
>>> ewma = EWMABaseline(alpha=0.1)
>>> f_ewma = np.array([ewma.update(np.array([0]), np.array([v]))[0] for v in x])
>>> h = 5
>>> mae = lambda f: float(np.mean(np.abs(f[:-h] - x[h:])))
>>> round(mae(x), 2), round(mae(f_ewma), 2)      # persistence vs EWMA at horizon 5
(5.79, 4.11)
"""

from __future__ import annotations

import numpy as np


class EWMABaseline:
    """Per-row exponentially weighted mean, updated in order (rows may repeat in a call).

    Parameters
    ----------
    alpha
        Weight of the newest observation, in (0, 1].
    """

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.level_ = np.zeros(0)
        self.seen_ = np.zeros(0, dtype=bool)

    def update(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed observations; return the EWMA after each one (the forecast made then)."""
        if len(rows) and rows.max() >= len(self.level_):
            grow = int(rows.max()) + 1 - len(self.level_) + 16
            self.level_ = np.concatenate([self.level_, np.zeros(grow)])
            self.seen_ = np.concatenate([self.seen_, np.zeros(grow, dtype=bool)])
        out = np.empty(len(rows))
        a, level, seen = self.alpha, self.level_, self.seen_
        for i, (r, v) in enumerate(zip(rows.tolist(), values.tolist(), strict=True)):
            level[r] = a * v + (1.0 - a) * level[r] if seen[r] else v
            seen[r] = True
            out[i] = level[r]
        return out


def persistence(values: np.ndarray) -> np.ndarray:
    """The persistence forecast: the latest observation itself (for every horizon).

    >>> persistence(np.array([3.0, 4.0])).tolist()
    [3.0, 4.0]
    """
    return np.asarray(values, dtype=float).copy()


class HarmonicBaseline:
    """Per-row harmonic mean of the latest ``k`` observations (what RobustMPC-style video
    players forecast throughput with); fewer than ``k`` seen: of those seen.

    Parameters
    ----------
    k
        Observations averaged.
    floor
        Values are floored here before the reciprocal (a link at 0 would make it 0 forever).

    >>> hb = HarmonicBaseline(k=2)
    >>> hb.update(np.array([0, 0, 1, 0]), np.array([1.0, 3.0, 5.0, 3.0])).tolist()
    [1.0, 1.5, 5.0, 3.0]
    """

    def __init__(self, k: int = 5, floor: float = 1e-3) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.floor = k, floor
        self.inv_ = np.zeros((0, k))  # reciprocals of the latest k values per row
        self.n_ = np.zeros(0, dtype=np.int64)

    def update(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed observations; return the harmonic mean after each one (the forecast then)."""
        if len(rows) and rows.max() >= len(self.n_):
            grow = int(rows.max()) + 1 - len(self.n_) + 16
            self.inv_ = np.concatenate([self.inv_, np.zeros((grow, self.k))])
            self.n_ = np.concatenate([self.n_, np.zeros(grow, dtype=np.int64)])
        out = np.empty(len(rows))
        inv, n, k = self.inv_, self.n_, self.k
        recip = 1.0 / np.maximum(np.asarray(values, dtype=float), self.floor)
        for i, (r, v) in enumerate(zip(rows.tolist(), recip.tolist(), strict=True)):
            inv[r, n[r] % k] = v
            n[r] += 1
            m = min(int(n[r]), k)
            out[i] = m / inv[r, :m].sum() if m < k else k / inv[r].sum()
        return out
