"""river Half-Space Trees on z-score features squashed into [0, 1], protected from anomalies.

Half-Space Trees need features in [0, 1]. Our features are z-scores against each node's own
baseline (:mod:`models.reliability.features`), which have *known limits* after squashing:
``u = 0.5 + 0.5 * tanh(z / scale)`` maps z = 0 to 0.5 and +-infinity to 1 / 0, so no
streaming min-max scaler is needed (and none can be fooled by one early outlier).

The detector is scored, then learns, one record at a time; records whose score is at or
above ``protect_above`` are not learned, so an incident does not teach the trees that it is
normal (river's ``protect_anomaly_detector``, kept outside the scorer).

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> det = HSTDetector(n_trees=10, height=6, window_size=100, seed=1)
>>> for _ in range(600):
...     det.learn_one({"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)})
>>> normal = [det.score_one({"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}) for _ in range(200)]
>>> outlier = det.score_one({"a": 9.0, "b": -9.0})
>>> outlier > sorted(normal)[-10]     # beyond the 95th percentile of normal records
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from river.anomaly import HalfSpaceTrees

__all__ = ["HSTDetector", "squash"]


def squash(z: float, scale: float = 4.0) -> float:
    """Map a z-score onto [0, 1] with known limits (0 -> 0.5).

    >>> squash(0.0), round(squash(4.0), 3), round(squash(-40.0), 3)
    (0.5, 0.881, 0.0)
    """
    return 0.5 + 0.5 * math.tanh(z / scale)


class HSTDetector:
    """river ``HalfSpaceTrees`` over squashed z-score features, with protection.

    Parameters
    ----------
    n_trees, height, window_size
        Passed to :class:`river.anomaly.HalfSpaceTrees`.
    scale
        z-scores are squashed with ``tanh(z / scale)``.
    protect_above
        Raw HST scores at or above this are not learned (``None``: learn everything).
    features
        Names of the features to use (``None``: every feature the record carries; features
        missing from a record are taken as 0.5, the squashed baseline).
    seed
        Seed of the trees.
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        scale: float = 4.0,
        protect_above: float | None = 0.9,
        features: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.scale = scale
        self.protect_above = protect_above
        self.features = tuple(features) if features is not None else None
        self.seed = seed
        self.model_ = HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.n_learned_ = 0
        self.n_protected_ = 0

    def _x(self, z: Mapping[str, float]) -> dict[str, float]:
        s = self.scale
        if self.features is None:
            return {k: 0.5 + 0.5 * math.tanh(v / s) for k, v in z.items()}
        return {k: 0.5 + 0.5 * math.tanh(z.get(k, 0.0) / s) for k in self.features}

    def score_one(self, z: Mapping[str, float]) -> float:
        """Anomaly score in [0, 1] of one feature dict (higher = more anomalous)."""
        return float(self.model_.score_one(self._x(z)))

    def learn_one(self, z: Mapping[str, float], score: float | None = None) -> None:
        """Learn one feature dict unless its score (given or computed) is protected."""
        if self.protect_above is not None:
            if score is None:
                score = self.score_one(z)
            if score >= self.protect_above:
                self.n_protected_ += 1
                return
        self.model_.learn_one(self._x(z))
        self.n_learned_ += 1

    def score_learn_one(self, z: Mapping[str, float]) -> float:
        """Score, then learn (unless protected); returns the score."""
        x = self._x(z)
        score = float(self.model_.score_one(x))
        if self.protect_above is not None and score >= self.protect_above:
            self.n_protected_ += 1
        else:
            self.model_.learn_one(x)
            self.n_learned_ += 1
        return score
