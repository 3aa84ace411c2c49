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
