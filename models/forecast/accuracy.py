"""Online accuracy of forecasts against baselines: MAE, MAPE and interval coverage per horizon.

Each scored prediction is a triple of forecasts for the same target (the model and the two
baselines), so the figures compare like with like. Totals are cumulative since the tracker
started; :meth:`AccuracyTracker.reset` starts a new measuring period.

Examples
--------
>>> import numpy as np
>>> acc = AccuracyTracker(horizons=(5,))
>>> y = np.array([10.0, 20.0, 30.0])
>>> acc.update(5, y, model=y + 1, persistence=y + 4, ewma=y - 2,
...            lower=y - 1.5, upper=y + 0.5)
>>> s = acc.summary()[5]
>>> s["mae"], s["mae_persistence"], s["mae_ewma"], s["coverage"], s["skill"]
(1.0, 4.0, 2.0, 1.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SOURCES = ("model", "persistence", "ewma")


class AccuracyTracker:
    """Running MAE/MAPE per horizon for the model and the baselines, and interval coverage.

    Parameters
    ----------
    horizons
        Forecast horizons tracked.
    mape_floor
        Denominator floor of the absolute percentage error (same unit as the target), so
        near-zero actuals (a link down) do not dominate MAPE.
    """

    def __init__(self, horizons: Sequence[int], mape_floor: float = 1.0) -> None:
        self.horizons, self.mape_floor = tuple(horizons), mape_floor
        self.reset()

    def reset(self) -> None:
        """Start a new measuring period."""
        self.n_ = dict.fromkeys(self.horizons, 0)
        self.abs_ = {h: dict.fromkeys(_SOURCES, 0.0) for h in self.horizons}
        self.ape_ = {h: dict.fromkeys(_SOURCES, 0.0) for h in self.horizons}
        self.covered_ = dict.fromkeys(self.horizons, 0)
        self.width_ = dict.fromkeys(self.horizons, 0.0)

    def update(
        self,
        horizon: int,
        actual: np.ndarray,
        *,
        model: np.ndarray,
        persistence: np.ndarray,
        ewma: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
    ) -> None:
        """Score a batch of forecasts made ``horizon`` steps before ``actual``."""
        if not len(actual):
            return
        denom = np.maximum(np.abs(actual), self.mape_floor)
        for name, f in zip(_SOURCES, (model, persistence, ewma), strict=True):
            err = np.abs(f - actual)
            self.abs_[horizon][name] += float(err.sum())
            self.ape_[horizon][name] += float((err / denom).sum())
        self.covered_[horizon] += int(np.count_nonzero((actual >= lower) & (actual <= upper)))
        self.width_[horizon] += float(np.sum(upper - lower))
        self.n_[horizon] += len(actual)

    def summary(self) -> dict[int, dict[str, Any]]:
        """Per horizon: ``n``, ``mae``/``mape`` of each source, ``coverage``, ``skill``.

        ``skill`` is ``1 - mae / min(mae_persistence, mae_ewma)``: the share of the better
        baseline's error the model removes (0.25 = 25% lower MAE).
        """
        out: dict[int, dict[str, Any]] = {}
        for h in self.horizons:
            n = self.n_[h]
            row: dict[str, Any] = {"n": n}
            for name in _SOURCES:
                suffix = "" if name == "model" else f"_{name}"
                row[f"mae{suffix}"] = self.abs_[h][name] / n if n else float("nan")
                row[f"mape{suffix}"] = self.ape_[h][name] / n if n else float("nan")
            row["coverage"] = self.covered_[h] / n if n else float("nan")
            row["mean_width"] = self.width_[h] / n if n else float("nan")
            best = min(row["mae_persistence"], row["mae_ewma"])
            row["skill"] = 1.0 - row["mae"] / best if n and best > 0 else float("nan")
            out[h] = row
        return out
