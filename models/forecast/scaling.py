"""Feature and target scalers fitted on the warm-up windows and kept with the model.

Examples
--------
>>> import numpy as np
>>> x = np.array([[[1.0, 10.0], [3.0, 30.0]], [[5.0, 50.0], [7.0, 70.0]]])
>>> s = StandardScaler().fit(x)
>>> s.mean_.tolist(), [round(v, 2) for v in s.scale_.tolist()]
([4.0, 40.0], [2.24, 22.36])
>>> float(np.abs(s.transform(x).mean())) < 1e-9
True
"""

from __future__ import annotations

import numpy as np


class StandardScaler:
    """Per-last-axis mean/std over all leading axes (``scale_`` floored at ``eps``)."""

    def __init__(self, eps: float = 1e-3) -> None:
        self.eps = eps

    def fit(self, x: np.ndarray) -> StandardScaler:
        """Learn ``mean_``/``scale_`` of ``x`` (any shape; statistics per last axis)."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        self.mean_ = flat.mean(axis=0)
        self.scale_ = np.maximum(flat.std(axis=0), self.eps)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean_) / scale_`` as float32."""
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform` (float64)."""
        return np.asarray(z, dtype=np.float64) * self.scale_ + self.mean_


class RobustScaler(StandardScaler):
    """Median and IQR-based scale (``IQR / 1.349``, the std of a normal): a few incidents in
    the training windows do not stretch the scale.

    >>> x = np.concatenate([np.linspace(-1, 1, 99), [1000.0]])[:, None]
    >>> s = RobustScaler().fit(x)
    >>> round(float(s.mean_[0]), 2), round(float(s.scale_[0]), 2)
    (0.01, 0.75)
    """

    def fit(self, x: np.ndarray) -> RobustScaler:
        """Learn ``mean_`` (the median) and ``scale_`` (IQR / 1.349) per last axis."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        q1, med, q3 = np.quantile(flat, (0.25, 0.5, 0.75), axis=0)
        self.mean_ = med
        self.scale_ = np.maximum((q3 - q1) / 1.349, self.eps)
        return self
