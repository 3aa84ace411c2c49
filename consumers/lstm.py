"""What the two LSTM processors (bandwidth forecaster, consensus autoencoder) share: the
training flags and TensorFlow's thread set-up, in one base class."""

from __future__ import annotations

import argparse
from concurrent.futures import Executor
from typing import Any

from stream import app, workers

#: ``nice`` of the training worker: on a busy machine the scheduler prefers the stream loop
TRAIN_NICE = 10


class LSTMProcessor(app.Processor):
    """A processor whose model is a Keras LSTM retrained in micro-batches.

    Background fits run in one worker process shared by the LSTM processors of a process
    (``--train-in process``, the default): a clean ``spawn`` interpreter (:func:`stream.workers.
    pool`) at ``nice`` +10 that dies with the consumer. Keras' training loop is Python, and in a
    thread of the consumer it held the interpreter lock the stream loop needs.
    """

    _pool: Executor | None = None  # shared by the LSTM processors of this process
    _pool_users = 0

    #: Defaults of the shared flags: (units, warm-up windows, records between retrains).
    lstm_defaults: tuple[int, int, int] = (32, 20000, 50000)

    @classmethod
    def configure(cls, args: argparse.Namespace) -> None:
        from models.forecast import tfrt

        tfrt.configure_threads(args.tf_threads, 1)

    @classmethod
    def add_training_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Window, size, warm-up, retraining, seed and threads (the same for both models)."""
        units, warmup, every = cls.lstm_defaults
        group.add_argument("--window", type=int, default=30, help="steps per window (default 30)")
        group.add_argument("--units", type=int, default=units, help=f"LSTM units (default {units})")
        group.add_argument(
            "--warmup-windows",
            type=int,
            default=warmup,
            help=f"windows before the first fit (default {warmup})",
        )
        group.add_argument(
            "--retrain-every",
            type=int,
            default=every,
            help=f"samples between scheduled retrains (default {every})",
        )
        group.add_argument(
            "--no-retrain", dest="retrain", action="store_false", help="only drift retrains"
        )
        group.add_argument(
            "--sync-retrain", action="store_true", help="retrain inline (reproducible)"
        )
        group.add_argument("--seed", type=int, default=0)
        group.add_argument("--fit-batch", type=int, default=256, help="training minibatch size")
        group.add_argument(
            "--retrain-pause",
            type=float,
            default=0.01,
            help="seconds a background retrain sleeps per minibatch",
        )
        group.add_argument(
            "--tf-threads", type=int, default=2, help="TensorFlow intra-op threads"
        )
        group.add_argument(
            "--train-in",
            choices=("process", "thread"),
            default="process",
            help="where background fits run: a worker process at lower CPU priority, shared "
            "by the LSTM models of this process (default), or a thread of this process",
        )

    def train_where(self, model: Any, args: argparse.Namespace) -> None:
        """Give ``model`` (a :class:`~models.forecast.retrain.RetrainsInBackground`) this
        run's training worker, or none (inline fits, ``--train-in thread``); a restored model
        starts compiling its inference now, before the group is joined."""
        model.warm_inference()
        if args.sync_retrain or args.train_in == "thread":
            model.train_in(None)
            return
        cls = LSTMProcessor
        if cls._pool is None:
            from models.forecast import tfrt
            from models.forecast.retrain import prepare_worker

            cls._pool = workers.pool(max_workers=1, nice=TRAIN_NICE)
            cls._pool.submit(prepare_worker, tfrt.threads())  # its imports, before a fit waits
        cls._pool_users += 1
        self._uses_pool = True
        model.train_in(cls._pool)

    def release_pool(self) -> None:
        """Shut the shared worker down once its last processor has closed."""
        cls = LSTMProcessor
        if not getattr(self, "_uses_pool", False):
            return
        self._uses_pool = False
        cls._pool_users -= 1
        if cls._pool_users <= 0 and cls._pool is not None:
            cls._pool.shutdown(wait=False, cancel_futures=True)
            cls._pool, cls._pool_users = None, 0
