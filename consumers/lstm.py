"""What the two LSTM processors (bandwidth forecaster, consensus autoencoder) share: the
training flags and TensorFlow's thread set-up, in one base class."""

from __future__ import annotations

import argparse

from stream import app


class LSTMProcessor(app.Processor):
    """A processor whose model is a Keras LSTM retrained in micro-batches."""

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
