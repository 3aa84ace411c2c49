"""Drift trigger: river's ADWIN on the forecast error asks for an early retrain.

Errors are averaged in chunks before they reach ADWIN (one update per ``chunk`` errors), so
a fleet of thousands of links costs a few ADWIN updates per batch. Only a rise of the error
counts as drift (a model getting better needs no retrain), and after a trigger the detector
stays quiet for ``cooldown`` chunks while the retrain runs.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d = DriftTrigger(chunk=10, cooldown=5)
>>> calm = np.abs(rng.normal(0.0, 1.0, 3000))
>>> d.update(calm)
False
>>> d.update(3.0 * np.abs(rng.normal(0.0, 1.0, 3000)))   # the error triples: drift
True
>>> d.detections
1
"""

from __future__ import annotations

import numpy as np


class DriftTrigger:
    """ADWIN over chunk means of an error stream; :meth:`update` returns True on a rise.

    Parameters
    ----------
    delta
        ADWIN confidence (smaller = fewer false alarms).
    chunk
        Errors averaged into one ADWIN update.
    cooldown
        Chunks ignored after a detection.
    """

    def __init__(self, delta: float = 0.002, chunk: int = 200, cooldown: int = 50) -> None:
        self.delta, self.chunk, self.cooldown = delta, chunk, cooldown
        self.detections = 0
        self._reset()
        self._pending: list[float] = []
        self._quiet = 0

    def _reset(self) -> None:
        from river.drift import ADWIN

        self.adwin_ = ADWIN(delta=self.delta)

    def update(self, errors: np.ndarray) -> bool:
        """Feed errors; True when ADWIN saw the mean error rise (at most once per call)."""
        fired = False
        buf = self._pending
        buf.extend(np.asarray(errors, dtype=float).tolist())
        while len(buf) >= self.chunk:
            x = float(np.mean(buf[: self.chunk]))
            del buf[: self.chunk]
            before = self.adwin_.estimation
            self.adwin_.update(x)
            if self._quiet > 0:
                self._quiet -= 1
                continue
            if self.adwin_.drift_detected and self.adwin_.estimation > before:
                self.detections += 1
                self._quiet = self.cooldown
                fired = True
        return fired
