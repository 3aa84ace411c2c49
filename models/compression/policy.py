"""The policy network: a small Keras MLP that imitates the transfer-time model's best action.

Training data are link states (e.g. :func:`producers.compression_states.fleet_states`, or
telemetry from the stream) labelled by :class:`~models.compression.transfer.TransferModel`:
no human rule and no hand labels. The network sees :func:`~models.compression.states.features`
standardised by a Keras ``Normalization`` layer, then ``hidden`` ReLU layers and a softmax over
the codec table's actions. Decisions use the reference numpy forward pass of the exported
weights (:class:`~models.compression.portable.PortablePolicy`), which matches Keras within
1e-5 and needs no TensorFlow; Keras is built only to train.

Examples
--------
A policy restored from an exported document decides without TensorFlow; here the document is
a one-layer nearest-centroid rule (training the network is too slow for a doctest, see
``bench/bench_compression.py`` for the trained one):

>>> from producers.compression_states import fleet_states
>>> from models.compression.evaluate import evaluate
>>> from models.compression.portable import Dense, PortablePolicy
>>> from models.compression.states import features
>>> teacher = TransferModel()
>>> states = fleet_states(seed=2, nodes=8, hours=1.0, interval_s=120.0)
>>> x, best = features(states), teacher.best(states)
>>> c = np.array([x[best == k].mean(axis=0) if (best == k).any() else x.mean(axis=0) * 0
...               for k in range(len(teacher.names))])
>>> doc = PortablePolicy(actions=teacher.table.actions, mean=np.zeros(8), std=np.ones(8),
...                      layers=[Dense(c.T, -0.5 * (c**2).sum(axis=1), "softmax")], version="v0")
>>> policy = CompressionPolicy.from_portable(doc, transfer=teacher)
>>> ev = evaluate(teacher.times(states), policy.predict(states), teacher.names)
>>> round(ev.agreement, 3), ev.best_fixed, round(ev.regret_total, 4)
(0.528, 'zstd-9', 0.0405)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.compression._keras import keras as _keras
from models.compression.portable import Dense, PortablePolicy
from models.compression.states import FEATURE_NAMES, features
from models.compression.transfer import TransferModel
from models.forecast import tfrt

__all__ = ["CompressionPolicy"]

#: Minibatches per call into Keras' compiled train step (see ``CompressionPolicy._compile``).
STEPS_PER_EXECUTION = 32


class CompressionPolicy:
    """Keras policy network over codec actions, trained on states labelled by a transfer model.

    Parameters
    ----------
    transfer
        The teacher that labels states (default: :class:`TransferModel` on the committed table).
    hidden
        Units of each hidden ReLU layer.
    epochs, batch_size, learning_rate
        Training of :meth:`fit`: Adam on the cross-entropy of the teacher's best action, the
        learning rate decaying from ``learning_rate`` to 1% of it (cosine).
    update_epochs, update_lr_factor
        Passes over each micro-batch in :meth:`partial_fit`, at ``learning_rate`` times this
        factor (after the cosine decay of :meth:`fit`, updates should not undo it).
    seed
        Seeds weight initialisation and shuffling.
    threads
        TensorFlow intra-op threads (set once per process).

    Attributes
    ----------
    model_
        The Keras model (after :meth:`fit`, or rebuilt on the first update after a restore).
    portable_
        The exported weights every decision uses (:meth:`to_portable`).
    best_fixed_
        The fixed action with the least mean time (relative to each state's best) on the
        training states: the baseline a link's expected gain is quoted against, so that the
        mean of per-link gains is the mean per-state gain of
        :class:`~models.compression.evaluate.Evaluation`.
    n_seen_, updates_, fit_seconds_
        States learnt from, micro-batch updates since the fit, wall time of the fit.
    """

    def __init__(
        self,
        transfer: TransferModel | None = None,
        *,
        hidden: Sequence[int] = (64, 64),
        epochs: int = 30,
        batch_size: int = 1024,
        learning_rate: float = 5e-3,
        update_epochs: int = 2,
        update_lr_factor: float = 0.1,
        seed: int = 0,
        threads: int = 2,
    ) -> None:
        self.transfer = transfer if transfer is not None else TransferModel()
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.update_epochs = update_epochs
        self.update_lr_factor = update_lr_factor
        self.seed = seed
        self.threads = threads

    # -- training ----------------------------------------------------------------------------
    def fit(self, states: np.ndarray) -> CompressionPolicy:
        """Train from scratch on ``states`` labelled by the teacher; sets ``fit_seconds_``."""
        t0 = time.perf_counter()
        keras = _keras(self.threads)
        keras.utils.set_random_seed(self.seed)
        x, y, rel = self._xy(states)
        if not len(x):
            raise ValueError("no usable states to fit on (every row has a missing value)")
        self.best_fixed_ = self.names[int(rel.argmin())]
        self.model_ = self._build(keras, x.mean(axis=0), np.maximum(x.var(axis=0), 1e-6))
        steps = self.epochs * -(-len(x) // self.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            self.learning_rate, max(steps, 1), alpha=0.01
        )
        self._compile(keras, self.model_, schedule)
        self.model_.fit(
            x, y, epochs=self.epochs, batch_size=self.batch_size, shuffle=True, verbose=0
        )
        self.n_seen_, self.updates_, self._updating = len(x), 0, False
        self._refresh()
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def partial_fit(self, states: np.ndarray) -> CompressionPolicy:
        """One micro-batch update on ``states`` (labelled by the teacher); fits if untrained."""
        if not hasattr(self, "portable_"):
            return self.fit(states)
        x, y, _ = self._xy(states)
        if len(x) == 0:
            return self
        model = self._keras_model()
        if not self._updating:
            self._compile(_keras(self.threads), model, self.learning_rate * self.update_lr_factor)
            self._updating = True
        # the shuffle comes from (seed, update number), not from the process-wide random state
        # (which left two runs on the same states with different policies): the same states
        # give the same update, also after a restore (the number is in the exported policy)
        rng = np.random.default_rng([self.seed, self.updates_])
        tfrt.fit_shuffled(model, x, y, epochs=self.update_epochs, batch_size=self.batch_size,
                          rng=rng)  # fmt: skip
        self.n_seen_ += len(x)
        self.updates_ += 1
        self._refresh()
        return self

    # -- deciding ----------------------------------------------------------------------------
    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        """Probability of each action, shape ``(n, n_actions)`` (numpy forward pass)."""
        return self.portable_.predict_proba(states)

    def predict(self, states: np.ndarray) -> np.ndarray:
        """Index of the chosen action per state."""
        return self.predict_proba(states).argmax(axis=1)

    def keras_predict_proba(self, states: np.ndarray) -> np.ndarray:
        """The same probabilities computed by Keras (for checking the export)."""
        return np.asarray(self._keras_model()(features(states), training=False))

    @property
    def names(self) -> tuple[str, ...]:
        """Action names, in output order."""
        return self.transfer.names

    @property
    def version(self) -> str:
        """``compression-<codec table digest>-<weights digest>``: changes with every update."""
        return self.portable_.version

    # -- export ------------------------------------------------------------------------------
    def to_portable(self) -> PortablePolicy:
        """The exported policy (JSON-ready; see :mod:`models.compression.portable`)."""
        return self.portable_

    @classmethod
    def from_portable(
        cls, portable: PortablePolicy, transfer: TransferModel | None = None, **params: Any
    ) -> CompressionPolicy:
        """A policy that continues from ``portable`` (Keras is rebuilt only to train).

        ``params`` are constructor hyper-parameters; ``hidden`` comes from the document.
        """
        params["hidden"] = tuple(int(lay.kernel.shape[1]) for lay in portable.layers[:-1])
        policy = cls(transfer, **params)
        if policy.names != portable.names:
            raise ValueError(f"portable actions {portable.names} differ from {policy.names}")
        policy.portable_, policy._updating = portable, False
        policy.n_seen_ = int(portable.metadata.get("n_seen", 0))
        policy.best_fixed_ = str(portable.metadata.get("best_fixed", policy.transfer.reference))
        policy.updates_ = int(portable.metadata.get("updates", 0))
        return policy

    # -- internals ---------------------------------------------------------------------------
    def _xy(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, teacher labels and each action's mean time relative to the best."""
        s = np.asarray(states, dtype=np.float64)
        s = s[np.isfinite(s).all(axis=1)]
        times = self.transfer.times(s)
        rel = (
            (times / times.min(axis=1, keepdims=True)).mean(axis=0)
            if len(s)
            else np.zeros(times.shape[1])
        )
        return features(s), times.argmin(axis=1).astype(np.int32), rel

    def _build(self, keras: Any, mean: np.ndarray, variance: np.ndarray) -> Any:
        norm = keras.layers.Normalization(mean=mean, variance=variance)
        layers: list[Any] = [keras.Input(shape=(len(FEATURE_NAMES),)), norm]
        layers += [keras.layers.Dense(units, activation="relu") for units in self.hidden]
        layers.append(keras.layers.Dense(len(self.names), activation="softmax"))
        model = keras.Sequential(layers)
        self._compile(keras, model, self.learning_rate * self.update_lr_factor)
        return model

    def _compile(self, keras: Any, model: Any, learning_rate: Any) -> None:
        # up to 32 minibatches per call into the compiled step: the same updates in the same
        # order (bit-identical weights), about a fifth less time per micro-batch update for a
        # network this small, whose steps cost little more than the call around each of them
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            steps_per_execution=STEPS_PER_EXECUTION,
        )

    def _keras_model(self) -> Any:
        if getattr(self, "model_", None) is None:
            keras = _keras(self.threads)
            p = self.portable_
            self.model_ = self._build(keras, p.mean, p.std.astype(np.float64) ** 2)
            for layer, dense in zip(self.model_.layers[1:], p.layers, strict=True):
                layer.set_weights([dense.kernel, dense.bias])
        return self.model_

    def _refresh(self) -> None:
        norm, *dense = self.model_.layers
        mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1)
        var = np.asarray(norm.variance, dtype=np.float32).reshape(-1)
        std = np.maximum(np.sqrt(var), np.float32(1e-7))
        layers = []
        for layer in dense:
            kernel, bias = layer.get_weights()
            act = "softmax" if layer is dense[-1] else "relu"
            layers.append(Dense(kernel, bias, act))
        digest = hashlib.sha256(mean.tobytes() + std.tobytes())
        for lay in layers:
            digest.update(lay.kernel.tobytes() + lay.bias.tobytes())
        self.portable_ = PortablePolicy(
            actions=self.transfer.table.actions,
            mean=mean,
            std=std,
            layers=layers,
            version=f"compression-{self.transfer.table.digest[:8]}-{digest.hexdigest()[:8]}",
            metadata={
                "codec_table": self.transfer.table.digest,
                "n_seen": self.n_seen_,
                "updates": self.updates_,
                "best_fixed": self.best_fixed_,
                "hidden": list(self.hidden),
            },
        )
