"""Lazy TensorFlow import with thread counts for small (2-core) machines.

``import tensorflow`` costs seconds, so only the LSTM modules call :func:`tensorflow` and
only when a model is first built; every other consumer starts without it.

Examples
--------
>>> configure_threads(intra_op=2, inter_op=1)   # before the first import
>>> threads()
(2, 1)
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_tf: Any = None
_threads = (2, 1)


def configure_threads(intra_op: int = 2, inter_op: int = 1) -> None:
    """Thread counts applied when TensorFlow is first imported (no effect afterwards)."""
    global _threads
    if intra_op < 1 or inter_op < 1:
        raise ValueError(f"thread counts must be >= 1, got {intra_op}, {inter_op}")
    _threads = (intra_op, inter_op)


def threads() -> tuple[int, int]:
    """The configured ``(intra_op, inter_op)`` thread counts."""
    return _threads


def tensorflow() -> Any:
    """Import TensorFlow once (thread-safe), set its thread pools, return the module."""
    global _tf
    if _tf is not None:
        return _tf
    with _lock:
        if _tf is None:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(_threads[0])
                tf.config.threading.set_inter_op_parallelism_threads(_threads[1])
            except RuntimeError:  # the runtime was already initialised by someone else
                pass
            tf.get_logger().setLevel("ERROR")
            _tf = tf
    return _tf


def keras() -> Any:
    """The Keras module of the lazily imported TensorFlow."""
    tensorflow()
    import keras as _keras

    return _keras


#: Inference runs in calls of exactly this many rows (a model may choose another number,
#: :class:`Inference`): a smaller batch is padded with zero rows (their outputs dropped), a
#: larger one is cut. The kernels for a small or odd batch (one row: a matrix-vector product)
#: round differently, so a row's output would depend on which other rows were in its batch
#: (with XLA, 32 rows still round differently from 64 or more); one shape is also one XLA
#: compile per network, about 0.3 s (forecaster) and 1.3 s (autoencoder) of CPU, where a power
#: of two from 64 to 1,024 rows meant five at a process's start, about 8.4 s of CPU beside its
#: first records. Per row, the forecaster's 256-row calls cost 14% more than 1,024-row ones
#: (``python bench/probe_infer_rows.py``).
INFER_ROWS = 256


class Inference:
    """``net(x, training=False)`` for ``(rows, window, n_features)`` float32 inputs (``rows``:
    :data:`INFER_ROWS` unless the model's batches are smaller), compiled with XLA
    (``jit_compile``): the recurrent loop runs as one fused program instead of a few
    TensorFlow ops per time step, 2-3x faster per row on a 2-core machine.

    XLA compiles the one input shape once. :meth:`warm` starts a thread that compiles it, so
    a restored model compiles beside whatever comes next (joining the consumer group) instead
    of at its first batch; else the first call compiles. The thread is not a daemon: a process
    that ends early waits for it (a second or so) rather than tearing TensorFlow down under it.
    """

    def __init__(self, net: Any, window: int, n_features: int, rows: int = INFER_ROWS) -> None:
        tf = tensorflow()
        spec = tf.TensorSpec((rows, window, n_features), tf.float32)
        self.fn = tf.function(
            lambda x: net(x, training=False), input_signature=[spec], jit_compile=True
        )
        self.shape, self.rows = (window, n_features), rows
        self.compiling: threading.Thread | None = None

    def warm(self) -> None:
        """Compile in a thread (once; later calls do nothing)."""
        if self.compiling is None:
            self.compiling = threading.Thread(target=self._compile, name="xla-compile")
            self.compiling.start()

    def __call__(self, x: Any) -> Any:
        return self.fn(x)

    def _compile(self) -> None:
        import numpy as np

        self.fn(np.zeros((self.rows, *self.shape), dtype=np.float32))


def infer_padded(fn: Inference, x: Any) -> Any:
    """``fn(x).numpy()``, in calls of exactly ``fn.rows`` rows (the last one padded with zero
    rows): each row's output is the same in any batch."""
    import numpy as np

    rows = fn.rows
    outs = []
    for a in range(0, max(len(x), 1), rows):
        part = x[a : a + rows]
        n = len(part)
        if n < rows:
            part = np.concatenate([part, np.zeros((rows - n, *x.shape[1:]), dtype=x.dtype)])
        outs.append(fn(part).numpy()[:n])
    return outs[0] if len(outs) == 1 else np.concatenate(outs)


def fit_shuffled(
    net: Any,
    x: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    rng: Any,
    callbacks: list[Any] | None = None,
) -> None:
    """``net.fit`` one epoch at a time on an order drawn from ``rng`` (a numpy Generator).

    Keras' own ``shuffle=True`` draws from the process-wide random state, which another model
    (or a restore that re-seeds it) moves: training then depends on what else ran in the
    process. A per-model generator, pickled with the model, makes a retrain after a checkpoint
    restore the same as without it.
    """
    for _ in range(epochs):
        order = rng.permutation(len(x))
        net.fit(
            x[order],
            y[order],
            epochs=1,
            batch_size=batch_size,
            shuffle=False,
            verbose=0,
            callbacks=callbacks or [],
        )


def optimizer_state(net: Any) -> list[Any]:
    """The optimizer's variables (step count, Adam moments) as numpy arrays ([] if unbuilt)."""
    import numpy as np

    return [np.array(v.numpy()) for v in net.optimizer.variables]


def restore_optimizer(net: Any, values: list[Any]) -> None:
    """Put :func:`optimizer_state` back into a freshly built ``net`` (a warm start continues
    with the same Adam moments, as it would have without the checkpoint)."""
    if not values:
        return
    opt = net.optimizer
    if not opt.variables or len(opt.variables) != len(values):
        opt.build(net.trainable_variables)
    for var, value in zip(opt.variables, values, strict=True):
        var.assign(value)


class KerasPickling:
    """Pickling for a model that holds a Keras network in ``net_`` (and a compiled inference
    function in ``_infer``): the weights, the optimizer's state and the training-order
    generator travel as numpy data, and the network is rebuilt with ``_build()`` on load, so
    training after a restore continues exactly as it would have without it."""

    net_: Any
    _infer: Inference | None
    seed: int

    def _build(self) -> None:
        raise TypeError(f"{type(self).__name__} must define _build()")

    def warm_inference(self) -> None:
        """Start compiling the inference shapes now (:meth:`Inference.warm`); nothing to do
        before the network is built."""
        if self._infer is not None:
            self._infer.warm()

    def get_weights(self) -> list[Any]:
        raise TypeError(f"{type(self).__name__} must define get_weights()")

    def set_weights(self, weights: list[Any]) -> None:
        raise TypeError(f"{type(self).__name__} must define set_weights()")

    def _shuffle_rng(self) -> Any:
        """The generator of training orders (seeded once; pickled with the model)."""
        import numpy as np

        rng = self.__dict__.get("rng_")
        if rng is None:
            rng = self.rng_ = np.random.default_rng(self.seed)
        return rng

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("net_", "_infer")}
        built = self.net_ is not None
        state["weights_"] = self.get_weights() if built else None
        state["optimizer_"] = optimizer_state(self.net_) if built else []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("weights_", None)
        optimizer = state.pop("optimizer_", [])
        self.__dict__.update(state)
        self.net_, self._infer = None, None
        if weights is not None:
            self._build()
            self.set_weights(weights)
            restore_optimizer(self.net_, optimizer)
