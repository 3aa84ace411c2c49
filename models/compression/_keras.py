"""Lazy TensorFlow/Keras: imported on first use, with the thread pools sized for a small host.

Nothing else in :mod:`models.compression` imports TensorFlow, so consumers that never train
start without it (importing TensorFlow takes seconds).
"""

from __future__ import annotations

from typing import Any

_configured: dict[str, int] = {}


def keras(threads: int = 2) -> Any:
    """The ``keras`` module (Keras 3 on TensorFlow), thread pools set on first call.

    TensorFlow fixes its thread pools when it first runs an op; later calls with another
    ``threads`` keep the first setting.
    """
    import tensorflow as tf

    if not _configured:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised by someone else in this process
            pass
        _configured["threads"] = threads
    import keras as keras_module

    return keras_module
