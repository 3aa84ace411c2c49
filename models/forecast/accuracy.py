"""Online accuracy of forecasts against baselines: MAE, MAPE and interval coverage per horizon.

Each scored prediction is a set of forecasts for the same target (the published forecast as
``model``, and every other source: the ensemble's members, the baselines), so the figures
compare like with like. Totals are cumulative since the tracker started;
:meth:`AccuracyTracker.reset` starts a new measuring period.

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
>>> s["best_baseline"]
'ewma'
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

_SOURCES = ("model", "persistence", "ewma")
#: A deferred update: horizon, actual, lower, upper and the forecasts by source.
_Pending = tuple[int, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]


class AccuracyTracker:
    """Running MAE/MAPE per horizon for the model and the baselines, and interval coverage.

    Parameters
    ----------
    horizons
        Forecast horizons tracked.
    mape_floor
        Denominator floor of the absolute percentage error (same unit as the target), so
        near-zero actuals (a link down) do not dominate MAPE.
    sources
        Names of the forecasts scored together; ``"model"`` (the published forecast) first.
    baselines
        The sources ``skill`` is measured against (default: every source but ``model``);
        each other source ``s`` gets its own ``skill_s`` against the same best baseline.
    """

    def __init__(
        self,
        horizons: Sequence[int],
        mape_floor: float = 1.0,
        sources: Sequence[str] = _SOURCES,
        baselines: Sequence[str] | None = None,
    ) -> None:
        self.horizons, self.mape_floor = tuple(horizons), mape_floor
        self.sources = tuple(sources)
        if not self.sources or self.sources[0] != "model":
            raise ValueError(f"sources must start with 'model', got {self.sources}")
        self.baselines = tuple(self.sources[1:] if baselines is None else baselines)
        unknown = set(self.baselines) - set(self.sources[1:])
        if unknown:
            raise ValueError(f"baselines not among the sources: {sorted(unknown)}")
        self.reset()

    # deferred updates (a tracker pickled before deferral restores with none)
    pending_: list[_Pending] | None = None

    def reset(self) -> None:
        """Start a new measuring period."""
        self.pending_ = []
        self.n_ = dict.fromkeys(self.horizons, 0)
        self.abs_ = {h: dict.fromkeys(self.sources, 0.0) for h in self.horizons}
        self.ape_ = {h: dict.fromkeys(self.sources, 0.0) for h in self.horizons}
        self.covered_ = dict.fromkeys(self.horizons, 0)
        self.width_ = dict.fromkeys(self.horizons, 0.0)

    def update(
        self,
        horizon: int,
        actual: np.ndarray,
        *,
        lower: np.ndarray,
        upper: np.ndarray,
        defer: bool = False,
        **forecasts: np.ndarray,
    ) -> None:
        """Score a batch of forecasts made ``horizon`` steps before ``actual`` (one keyword
        argument per source). With ``defer`` they are added at :meth:`flush`, each horizon's
        in one sum: the totals then depend on what came before a flush, not on how it was cut
        into calls (float sums of different groupings differ in the last bit)."""
        if not len(actual):
            return
        if set(forecasts) != set(self.sources):
            raise ValueError(f"expected forecasts {self.sources}, got {sorted(forecasts)}")
        if defer:
            if self.pending_ is None:
                self.pending_ = []
            self.pending_.append((horizon, actual, lower, upper, forecasts))
            return
        self._add(horizon, actual, lower, upper, forecasts)

    def flush(self) -> None:
        """Add the deferred updates, per horizon in the order they came."""
        pending, self.pending_ = self.pending_ or [], []
        for h in self.horizons:
            parts = [p for p in pending if p[0] == h]
            if parts:
                actual, lower, upper = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
                fc = {k: np.concatenate([p[4][k] for p in parts]) for k in self.sources}
                self._add(h, actual, lower, upper, fc)

    def _add(
        self,
        horizon: int,
        actual: np.ndarray,
        lower: np.ndarray,
        upper: np.ndarray,
        forecasts: dict[str, np.ndarray],
    ) -> None:
        denom = np.maximum(np.abs(actual), self.mape_floor)
        for name in self.sources:
            err = np.abs(forecasts[name] - actual)
            self.abs_[horizon][name] += float(err.sum())
            self.ape_[horizon][name] += float((err / denom).sum())
        self.covered_[horizon] += int(np.count_nonzero((actual >= lower) & (actual <= upper)))
        self.width_[horizon] += float(np.sum(upper - lower))
        self.n_[horizon] += len(actual)

    def summary(self) -> dict[int, dict[str, Any]]:
        """Per horizon: ``n``, ``mae``/``mape`` of each source, ``coverage``, ``skill``.

        ``mae``/``mape`` are the model's; ``mae_<source>`` the others'. ``skill`` is
        ``1 - mae / min(baseline MAEs)``: the share of the best baseline's error the model
        removes (0.25 = 25% lower MAE); ``best_baseline`` names that baseline. Deferred
        updates count (on a copy; they stay deferred).
        """
        if self.pending_:
            done = copy.deepcopy(self)
            done.flush()
            return done.summary()
        out: dict[int, dict[str, Any]] = {}
        for h in self.horizons:
            n = self.n_[h]
            row: dict[str, Any] = {"n": n}
            for name in self.sources:
                suffix = "" if name == "model" else f"_{name}"
                row[f"mae{suffix}"] = self.abs_[h][name] / n if n else float("nan")
                row[f"mape{suffix}"] = self.ape_[h][name] / n if n else float("nan")
            row["coverage"] = self.covered_[h] / n if n else float("nan")
            row["mean_width"] = self.width_[h] / n if n else float("nan")
            best_name = min(self.baselines, key=lambda b: self.abs_[h][b])
            best = row[f"mae_{best_name}"]
            ok = n and best > 0
            row["best_baseline"] = best_name
            row["skill"] = 1.0 - row["mae"] / best if ok else float("nan")
            for name in self.sources[1:]:
                if name not in self.baselines:
                    row[f"skill_{name}"] = 1.0 - row[f"mae_{name}"] / best if ok else float("nan")
            out[h] = row
        return out
