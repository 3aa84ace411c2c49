"""The Keras LSTM autoencoder: a window in, the same window back through a small bottleneck.

Encoder ``LSTM(units)`` -> ``Dense(latent)`` -> repeated over the window -> decoder
``LSTM(units, return_sequences=True)`` -> per-step ``Dense(features)``. Trained on normal
windows only; :meth:`LSTMAutoencoder.score` is the mean squared reconstruction error per
window (scaled features; column weights let the consensus column dominate; the largest
per-step errors can be trimmed). Inference runs
inside one XLA-compiled ``tf.function`` (:class:`models.forecast.tfrt.Inference`).

Examples
--------
Windows of a smooth sine reconstruct well; the same windows with a level jump do not.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = np.arange(30)
>>> x = np.stack([np.sin(t / 5 + p) for p in rng.uniform(0, 6, 300)])[:, :, None] * 0.3
>>> ae = LSTMAutoencoder(window=30, n_features=1, units=8, latent=4, epochs=5, seed=0)
>>> _ = ae.fit(x.astype(np.float32))
>>> normal, shifted = ae.score(x[:100]), ae.score(x[:100] + 1.0)
>>> bool(np.median(shifted) > 5 * np.median(normal))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.forecast import tfrt
from models.forecast.lstm import _pause_callbacks
from models.forecast.scaling import RobustScaler
from models.forecast.windows import row_sum

#: Rows per inference call: the consensus detector scores a few to about a hundred windows at a
#: time (a step of 100 samples), so 64-row calls waste less padding than the forecaster's 256.
INFER_ROWS = 64


class LSTMAutoencoder(tfrt.KerasPickling):
    """LSTM sequence autoencoder with a reconstruction-error score (higher = more anomalous).

    Parameters
    ----------
    window, n_features
        Input shape.
    units, latent
        LSTM units and bottleneck size.
    weights
        Per-feature weights of the error (default: all 1).
    trim
        The ``trim`` largest per-step errors of a window are left out of its score, so a
        one-sample spike (a leader election) does not look like a sustained degradation.
    epochs, batch_size, learning_rate, seed
        Training of :meth:`fit` and the one seed.
    """

    def __init__(
        self,
        window: int = 30,
        n_features: int = 3,
        units: int = 16,
        latent: int = 4,
        weights: Sequence[float] | None = None,
        trim: int = 0,
        epochs: int = 5,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        seed: int = 0,
    ) -> None:
        self.window, self.n_features, self.units, self.latent = window, n_features, units, latent
        self.weights = tuple(weights) if weights is not None else (1.0,) * n_features
        if not 0 <= trim < window:
            raise ValueError(f"trim must be in [0, window), got {trim}")
        self.trim = trim
        self.epochs, self.batch_size, self.learning_rate, self.seed = (
            epochs,
            batch_size,
            learning_rate,
            seed,
        )
        self.net_: Any = None
        self._infer: Any = None

    def _build(self) -> None:
        keras = tfrt.keras()
        keras.utils.set_random_seed(self.seed)
        L = keras.layers
        inp = keras.Input((self.window, self.n_features))
        z = L.Dense(self.latent)(L.LSTM(self.units)(inp))
        h = L.LSTM(self.units, return_sequences=True)(L.RepeatVector(self.window)(z))
        out = L.TimeDistributed(L.Dense(self.n_features))(h)
        net = keras.Model(inp, out)
        net.compile(optimizer=keras.optimizers.Adam(self.learning_rate, clipnorm=1.0), loss="mse")
        self._infer = tfrt.Inference(net, self.window, self.n_features, rows=INFER_ROWS)
        self.net_ = net

    def fit(
        self, x: np.ndarray, y: Any = None, epochs: int | None = None, pause_s: float = 0.0
    ) -> LSTMAutoencoder:
        """Train on normal windows ``(n, window, features)`` (warm start after the first call).

        ``y`` is ignored (the target is ``x``); it keeps the signature of other models.
        ``pause_s`` sleeps after every minibatch (a background retrain leaves CPU to inference).
        """
        if self.net_ is None:
            self.scaler_ = RobustScaler(eps=0.02).fit(x)
            self._build()
        xs = self.scaler_.transform(x)
        tfrt.fit_shuffled(
            self.net_,
            xs,
            xs,
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            rng=self._shuffle_rng(),
            callbacks=_pause_callbacks(pause_s),
        )
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Weighted mean squared reconstruction error per window."""
        if self.net_ is None:
            raise RuntimeError("LSTMAutoencoder.score before fit")
        if not len(x):
            return np.zeros(0)
        xs = self.scaler_.transform(x)
        rec = tfrt.infer_padded(self._infer, xs)  # a window's score never depends on its batch
        w = np.asarray(self.weights, dtype=np.float64)
        per_step = row_sum(((xs - rec) ** 2).astype(np.float64) * w) / w.sum()  # (n, window)
        if self.trim:
            per_step = np.partition(per_step, self.window - self.trim - 1, axis=1)
            per_step = per_step[:, : self.window - self.trim]
        return row_sum(per_step) / per_step.shape[1]

    def get_weights(self) -> list[np.ndarray]:
        """The network's weights."""
        return [np.array(w) for w in self.net_.get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Replace the network's weights."""
        self.net_.set_weights(weights)

    def copy_from(self, other: LSTMAutoencoder) -> None:
        """Take ``other``'s scaler and weights."""
        self.scaler_ = other.scaler_
        if self.net_ is None:
            self._build()
        self.set_weights(other.get_weights())

