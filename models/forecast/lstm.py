"""The Keras LSTM that forecasts log throughput several steps ahead from a window of features.

Windows are made window-relative (:func:`models.forecast.windows.normalize_windows`), scaled
with a :class:`~models.forecast.scaling.StandardScaler` fitted on the first training set, and
the network predicts ``log1p(throughput[t + h]) - ref`` for every horizon at once (one dense
head over the last LSTM state). Inference calls the model inside one XLA-compiled
``tf.function`` (:class:`~models.forecast.tfrt.Inference`), much faster than
``model.predict``, in calls of :data:`~models.forecast.tfrt.INFER_ROWS` rows (padded), so a
window's forecast does not depend on its batch.

TensorFlow is imported lazily (:mod:`models.forecast.tfrt`) when the network is first built.

Examples
--------
A noisy sine (period 40 steps): the LSTM learns the shape and beats persistence 5 steps ahead.

>>> import numpy as np
>>> t = np.arange(3000)
>>> rng = np.random.default_rng(0)
>>> series = 5.0 + np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(len(t))
>>> feats = series[:, None].astype(np.float32)
>>> idx = np.arange(19, len(t) - 5)
>>> x = np.stack([feats[i - 19 : i + 1] for i in idx])
>>> y = np.stack([series[idx + 1], series[idx + 5]], axis=1)
>>> f = LSTMForecaster(window=20, horizons=(1, 5), n_features=1, units=16, epochs=8, seed=0)
>>> _ = f.fit(x[:2000], y[:2000])
>>> pred = f.predict(x[2000:])[:, 1]
>>> mae_lstm = np.mean(np.abs(pred - y[2000:, 1]))
>>> mae_persist = np.mean(np.abs(series[idx[2000:]] - y[2000:, 1]))
>>> bool(mae_lstm < 0.5 * mae_persist)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.forecast import tfrt
from models.forecast.scaling import StandardScaler
from models.forecast.windows import CALENDAR_COLUMNS, FEATURES, LEVEL_COLUMNS, normalize_windows


class LSTMForecaster(tfrt.KerasPickling):
    """Multi-horizon LSTM forecaster of a log-scale target (see the module docstring).

    Parameters
    ----------
    window
        Steps per input window.
    horizons
        Steps ahead forecast, one output each.
    n_features
        Feature columns per step.
    level_columns
        Leading columns made window-relative; column 0 is the target's own history.
    units
        LSTM units.
    epochs, batch_size, learning_rate
        Training of :meth:`fit` (``epochs`` can be overridden per call).
    ref_alpha
        Forecasts are relative to the window's EWMA level with this smoothing (``None``: the
        window mean); an untrained network therefore starts at the EWMA baseline.
    fixed_columns
        Columns left unscaled (the calendar features).
    seed
        Seed of the weight initialisation and the shuffling.
    """

    def __init__(
        self,
        window: int = 30,
        horizons: Sequence[int] = (1, 5, 15),
        n_features: int = len(FEATURES),
        level_columns: int = LEVEL_COLUMNS,
        units: int = 32,
        epochs: int = 5,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        ref_alpha: float | None = 0.3,
        fixed_columns: Sequence[int] = CALENDAR_COLUMNS,
        seed: int = 0,
    ) -> None:
        self.window, self.horizons, self.n_features = window, tuple(horizons), n_features
        self.level_columns, self.units = min(level_columns, n_features), units
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.ref_alpha, self.seed = ref_alpha, seed
        self.fixed_columns = tuple(c for c in fixed_columns if c < n_features)
        self.net_: Any = None
        self._infer: Any = None
        self.fits_ = 0

    # -- network ---------------------------------------------------------------------------
    def _build(self) -> None:
        keras = tfrt.keras()
        keras.utils.set_random_seed(self.seed)
        inp = keras.Input((self.window, self.n_features))
        h = keras.layers.LSTM(self.units)(inp)
        out = keras.layers.Dense(len(self.horizons))(h)
        net = keras.Model(inp, out)
        net.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate, clipnorm=1.0),
            loss=keras.losses.Huber(delta=1.0),
        )
        self._infer = tfrt.Inference(net, self.window, self.n_features)
        self.net_ = net

    def _prepare(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, ref = normalize_windows(raw, self.level_columns, self.ref_alpha)
        return x, ref

    # -- learning --------------------------------------------------------------------------
    def fit(
        self, raw: np.ndarray, targets: np.ndarray, epochs: int | None = None, pause_s: float = 0.0
    ) -> LSTMForecaster:
        """Train on raw windows ``(n, window, F)`` and log targets ``(n, len(horizons))``.

        The first call fits the scalers and builds the network; later calls continue training
        the same weights (warm start), which is what a micro-batch retrain does. ``pause_s``
        sleeps after every minibatch, leaving the CPU to inference during a background retrain.
        """
        x, ref = self._prepare(raw)
        y = np.asarray(targets, dtype=np.float64) - ref[:, None]
        if self.net_ is None:
            self.x_scaler_ = StandardScaler().fit(x)
            for c in self.fixed_columns:  # calendar features keep their own [-1, 1] scale
                self.x_scaler_.mean_[c], self.x_scaler_.scale_[c] = 0.0, 1.0
            self.y_scaler_ = StandardScaler().fit(y)
            self._build()
        xs, ys = self.x_scaler_.transform(x), self.y_scaler_.transform(y)
        tfrt.fit_shuffled(
            self.net_,
            xs,
            ys,
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            rng=self._shuffle_rng(),
            callbacks=_pause_callbacks(pause_s),
        )
        self.fits_ += 1
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Log-scale forecasts ``(n, len(horizons))`` for raw windows ``(n, window, F)``."""
        if self.net_ is None:
            raise RuntimeError("LSTMForecaster.predict before fit")
        x, ref = self._prepare(raw)
        if not len(x):
            return np.zeros((0, len(self.horizons)))
        z = tfrt.infer_padded(self._infer, self.x_scaler_.transform(x))
        return self.y_scaler_.inverse(z) + ref[:, None]

    # -- state -----------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """The network's weights (numpy arrays)."""
        return [np.array(w) for w in self.net_.get_weights()]

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Replace the network's weights (same architecture)."""
        self.net_.set_weights(weights)

    def copy_from(self, other: LSTMForecaster) -> None:
        """Take ``other``'s scalers and weights (building the network if needed)."""
        self.x_scaler_, self.y_scaler_ = other.x_scaler_, other.y_scaler_
        if self.net_ is None:
            self._build()
        self.set_weights(other.get_weights())
        self.fits_ = other.fits_



def _pause_callbacks(pause_s: float) -> list[Any]:
    """A Keras callback that sleeps ``pause_s`` after each training batch (none if 0)."""
    if pause_s <= 0:
        return []
    import time

    keras = tfrt.keras()
    return [
        keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs=None: time.sleep(pause_s)
        )
    ]
