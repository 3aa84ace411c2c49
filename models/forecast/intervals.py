"""Prediction intervals from a rolling buffer of recent residuals (online split conformal).

The interval of a forecast ``f`` is ``[f + q_lo, f + q_hi]`` where ``q_lo``/``q_hi`` are the
``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles of the most recent residuals
(``actual - forecast``, one buffer per horizon). Residuals arrive as actual values do, so
the intervals follow the model's current error, including after a retrain or a drift.

Examples
--------
>>> import numpy as np
>>> rq = ResidualQuantiles(horizons=(1,), coverage=0.9, size=1000)
>>> rng = np.random.default_rng(1)
>>> rq.add(1, rng.standard_normal(1000))
>>> lo, hi = rq.bounds(1)
>>> round(lo, 1), round(hi, 1)
(-1.6, 1.6)
>>> new = rng.standard_normal(5000)
>>> round(float(np.mean((new >= lo) & (new <= hi))), 2)     # empirical coverage
0.9
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ResidualQuantiles:
    """Rolling residual buffers per horizon and the interval bounds they imply.

    Parameters
    ----------
    horizons
        Forecast horizons (steps ahead).
    coverage
        Nominal coverage of the intervals, e.g. 0.9.
    size
        Residuals kept per horizon.
    """

    def __init__(self, horizons: Sequence[int], coverage: float = 0.9, size: int = 5000) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.horizons, self.coverage, self.size = tuple(horizons), coverage, size
        self.buf_ = {h: np.zeros(size) for h in self.horizons}
        self.n_ = dict.fromkeys(self.horizons, 0)
        self._cache: dict[int, tuple[float, float]] = {}

    def add(self, horizon: int, residuals: np.ndarray) -> None:
        """Append residuals of one horizon (the oldest are dropped)."""
        r = np.asarray(residuals, dtype=float)[-self.size :]
        if not len(r):
            return
        buf, n = self.buf_[horizon], self.n_[horizon]
        idx = (n + np.arange(len(r))) % self.size
        buf[idx] = r
        self.n_[horizon] = n + len(r)
        self._cache.pop(horizon, None)

    def bounds(self, horizon: int) -> tuple[float, float]:
        """``(q_lo, q_hi)`` offsets for ``horizon`` (``(-inf, inf)`` before any residual)."""
        got = self._cache.get(horizon)
        if got is not None:
            return got
        n = min(self.n_[horizon], self.size)
        if n == 0:
            return (-np.inf, np.inf)
        a = (1.0 - self.coverage) / 2.0
        lo, hi = np.quantile(self.buf_[horizon][:n], (a, 1.0 - a))
        got = self._cache[horizon] = (float(lo), float(hi))
        return got
