"""The reliability detector: per-node context features, river Half-Space Trees and a
background-refit IsolationForest, per-link PCA residuals, calibrated and combined into one score, with category
signatures, missed-heartbeat tracking and the shared alert lifecycle.

Pure code: no Kafka, no file or network I/O, no environment reads (numba keeps its compiled
loops in its own cache beside the source: :func:`precompile`). See
:mod:`models.reliability.detector` for how the parts fit together.
"""

from __future__ import annotations

from models.reliability.calibration import ScoreCombiner, TailQuantile
from models.reliability.detector import RecordScore, ReliabilityDetector
from models.reliability.features import METRICS, FeatureRow, MetricSpec, NodeContext
from models.reliability.forest import ForestDetector, fit_forest
from models.reliability.heartbeat import HeartbeatTracker, Missing
from models.reliability.hst import HSTDetector
from models.reliability.residual import LinkResidual
from models.reliability.signatures import SIGNATURES, match_category
from models.reliability.trend import TrendTracker


def precompile() -> None:
    """Compile the detector's numba loops (the context's, the forest's walk, the trees', the
    surprises, the residuals) now, or load them from numba's cache: ``scripts/setup.sh``
    calls it once, so that no consumer's first records wait about 4 s for the compiler."""
    import numpy as np
    from sklearn.ensemble import IsolationForest

    from models.reliability import hst, residual
    from models.reliability.calibration import surprises
    from models.reliability.forest import ForestScorer

    NodeContext().learn_many([])
    x = np.zeros((4, 2))
    ForestScorer(IsolationForest(n_estimators=2, random_state=0).fit(x)).score_samples(x)
    mass = np.zeros((1, 3), dtype=np.int64)
    _, paths = hst._score(x[:1], np.zeros((1, 1), dtype=np.intp), np.zeros((1, 1)), mass, 1,
                          False, 0.1, 3)  # fmt: skip
    hst._add_paths(mass, paths, np.ones(1, dtype=np.bool_))
    surprises(np.zeros(1))
    residual._residuals(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), x[:1], np.ones((1, 2)),
                        np.zeros((1, 2, 1)), np.ones(1, dtype=np.int64),
                        np.full(1, 2, dtype=np.int64), np.ones(1), np.zeros(1))  # fmt: skip


__all__ = [
    "METRICS",
    "SIGNATURES",
    "FeatureRow",
    "ForestDetector",
    "HSTDetector",
    "HeartbeatTracker",
    "LinkResidual",
    "MetricSpec",
    "Missing",
    "NodeContext",
    "RecordScore",
    "ReliabilityDetector",
    "ScoreCombiner",
    "TailQuantile",
    "TrendTracker",
    "fit_forest",
    "match_category",
    "precompile",
]
