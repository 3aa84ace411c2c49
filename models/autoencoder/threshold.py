"""Adaptive threshold: a robust z-score bound on the log of recent *unflagged* scores.

``threshold = exp(median(log s) + k * 1.4826 * MAD(log s))`` over a rolling buffer of recent
scores. Median and MAD ignore the tail, so windows of an incident the detector has not flagged
yet cannot ratchet the threshold up (a ``margin x quantile`` rule fed with the scores below its
own value does exactly that). Flagged scores never enter the buffer (river's
``protect_anomaly_detector``). :meth:`squash` maps a raw score onto ``[0, 1)`` with the
threshold at 0.5, the scale alerts carry.

Examples
--------
>>> import numpy as np
>>> th = AdaptiveThreshold(k=3.0, size=10000, min_samples=100)
>>> rng = np.random.default_rng(0)
>>> th.update(np.exp(rng.standard_normal(10000)))      # log-normal scores
>>> round(float(np.log(th.value)), 1)                  # ~ 3 sigma in log space
3.0
>>> float(th.squash(np.array([th.value]))[0])
0.5
"""

from __future__ import annotations

import numpy as np


class AdaptiveThreshold:
    """Rolling robust threshold of normal scores.

    Parameters
    ----------
    k
        Robust z-score (in log space) of the threshold.
    size
        Scores kept.
    min_samples
        Below this many scores :attr:`value` is ``inf`` (nothing is flagged).
    """

    def __init__(self, k: float = 4.0, size: int = 20000, min_samples: int = 500) -> None:
        self.k, self.size, self.min_samples = k, size, min_samples
        self.buf_ = np.zeros(size)
        self.n_ = 0
        self._value: float | None = None

    def update(self, scores: np.ndarray) -> None:
        """Add normal (unflagged) scores."""
        s = np.asarray(scores, dtype=float)[-self.size :]
        if len(s):
            self.buf_[(self.n_ + np.arange(len(s))) % self.size] = np.log(np.maximum(s, 1e-12))
            self.n_ += len(s)
            self._value = None

    @property
    def value(self) -> float:
        """The current threshold on raw scores."""
        if self._value is None:
            n = min(self.n_, self.size)
            if n < self.min_samples:
                self._value = float("inf")
            else:
                b = self.buf_[:n]
                med = float(np.median(b))
                mad = float(np.median(np.abs(b - med))) * 1.4826
                self._value = float(np.exp(med + self.k * mad))
        return self._value

    def squash(self, scores: np.ndarray) -> np.ndarray:
        """``s / (s + threshold)``: 0.5 at the threshold, towards 1 far above it."""
        t = self.value
        s = np.asarray(scores, dtype=float)
        if not np.isfinite(t):
            return np.zeros_like(s)
        return s / (s + t)
