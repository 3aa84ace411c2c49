"""``python -m consumers.bandwidth``: LSTM throughput forecasts per link, retrained on the stream.

Reads telemetry, keeps a sliding window per link (node_id, peer_id), and once the warm-up
windows exist forecasts ``throughput_mbps`` 1, 5 and 15 intervals ahead with a prediction
interval (:mod:`models.forecast`). Each forecast goes to the predictions topic as a
:class:`stream.records.Prediction` (``kind="bandwidth_forecast"``, horizon, value, lower,
upper, model version, event time of the last observation). As actual values arrive each
forecast is scored against persistence and EWMA; the running figures are logged and published
(``kind="bandwidth_accuracy"``, node_id ``"fleet"``, value = MAE) every ``--accuracy-every``
records. The model is retrained in micro-batches in a background thread while inference goes
on (every ``--retrain-every`` records, or earlier when ADWIN sees the error rise), then swapped
in with a new version. State (model, scalers, buffers, accuracy) is checkpointed under
``DWCP_STATE_DIR``/bandwidth-<group> after each new version and on shutdown, and restored on start.

    python -m consumers.bandwidth --from-beginning
    python -m consumers.bandwidth --from-file .cache/lstm/bw.jsonl --report out.json   # offline
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from stream.checkpoint import CheckpointStore
from stream.errors import DwcpError
from stream.files import open_recording
from stream.kafka import Message
from stream.loop import LoopStats, Output, run_consumer
from stream.records import Prediction, encode
from stream.schema import decode_telemetry_lines
from stream.settings import Settings

log = logging.getLogger("consumers.bandwidth")
NAME = "bandwidth"


def iter_file_batches(path: str | Path, batch: int) -> Iterator[list[Any]]:
    """Decoded telemetry from a JSON-lines recording (``.gz`` too), ``batch`` records at a time."""
    with open_recording(path) as f:
        lines: list[bytes] = []
        for line in f:
            lines.append(line)
            if len(lines) >= batch:
                yield decode_telemetry_lines(b"".join(lines))
                lines = []
        if lines:
            yield decode_telemetry_lines(b"".join(lines))


class BandwidthApp:
    """The consumer's state: the online forecaster, its checkpoints and the output encoding."""

    def __init__(self, settings: Settings, args: argparse.Namespace, store: CheckpointStore | None):
        self.settings, self.args, self.store = settings, args, store
        self.topic = settings.topic("predictions")
        self.forecaster = self._restore() or self._new()
        self.published = 0
        self.last_accuracy = self.forecaster.records_
        self.last_version = self.forecaster.version_
        self.checkpoint_due = False
        self.outputs_on = True

    def _new(self) -> Any:
        from models.forecast.online import OnlineForecaster

        a = self.args
        return OnlineForecaster(
            window=a.window,
            horizons=tuple(int(h) for h in a.horizons.split(",")),
            units=a.units,
            warmup_windows=a.warmup_windows,
            retrain_every=a.retrain_every if a.retrain else 10**15,
            retrain_windows=a.retrain_windows,
            retrain_epochs=a.retrain_epochs,
            coverage=a.coverage,
            ewma_alpha=a.ewma_alpha,
            background=not a.sync_retrain,
            batch_size=a.fit_batch,
            retrain_pause_s=a.retrain_pause,
            seed=a.seed,
        )

    def _restore(self) -> Any:
        if self.store is None:
            return None
        got = self.store.load()
        if got is None:
            return None
        state, meta = got
        log.info(
            "restored checkpoint %s: %s, %d records seen",
            meta.get("version"),
            state.model_version,
            state.records_,
        )
        return state

    def checkpoint(self, wait: bool = True) -> None:
        """Save the forecaster as a new checkpoint version (``wait``: let a running retrain
        finish and swap in first, as on shutdown)."""
        self.checkpoint_due = False
        if self.store is None:
            return
        f = self.forecaster
        if wait:
            f.finish()
        v = self.store.save(f, meta={"model_version": f.model_version, "records": f.records_})
        log.info("checkpoint %d saved (%s)", v, f.model_version)

    # -- handling ----------------------------------------------------------------------------
    def predictions(self, recs: Sequence[Any]) -> list[Prediction]:
        """Feed decoded telemetry to the forecaster; return the predictions to publish."""
        keep = [r for r in recs if r.peer_id is not None and r.throughput_mbps is not None]
        if not keep:
            return []
        f = self.forecaster
        nan = float("nan")
        out = f.process(
            [(r.node_id, r.peer_id) for r in keep],
            np.array([r.timestamp.timestamp() for r in keep]),
            np.array([r.throughput_mbps for r in keep]),
            np.array([nan if r.rtt_ms is None else r.rtt_ms for r in keep]),
            np.array([nan if r.jitter_ms is None else r.jitter_ms for r in keep]),
            np.array([nan if r.packet_loss is None else r.packet_loss for r in keep]),
        )
        for e in out.events:
            log.info("%s", e)
        preds: list[Prediction] = []
        every = self.args.publish_every
        if self.outputs_on and len(out.index):
            horizons = f.horizons
            value, lower, upper = out.value.tolist(), out.lower.tolist(), out.upper.tolist()
            versions = out.versions.tolist()
            for i, k in enumerate(out.index.tolist()):
                r = keep[k]
                version = f"bandwidth-lstm-v{versions[i]}"
                if every > 1 and int(r.timestamp.timestamp() / (f.interval_ or 1.0)) % every:
                    continue
                for j, h in enumerate(horizons):
                    preds.append(
                        Prediction(
                            kind="bandwidth_forecast",
                            node_id=r.node_id,
                            peer_id=r.peer_id,
                            event_time=r.timestamp,
                            model_version=version,
                            target="throughput_mbps",
                            horizon=h,
                            value=round(value[i][j], 3),
                            lower=round(lower[i][j], 3),
                            upper=round(upper[i][j], 3),
                        )
                    )
        if f.records_ - self.last_accuracy >= self.args.accuracy_every:
            acc = self.accuracy_records(keep[-1].timestamp)
            if acc:  # nothing scored yet (still warming up): try again with the next batch
                self.last_accuracy = f.records_
                preds.extend(acc)
        return preds

    def accuracy_records(self, when: Any) -> list[Prediction]:
        """The running accuracy per horizon as predictions (value = MAE), and a log line."""
        f = self.forecaster
        out = []
        for h, s in f.accuracy_.summary().items():
            if not s["n"]:
                continue
            log.info(
                "accuracy h=%d n=%d MAE %.2f (persistence %.2f, EWMA %.2f, skill %.1f%%) "
                "MAPE %.1f%% coverage %.1f%% (nominal %.0f%%)",
                h,
                s["n"],
                s["mae"],
                s["mae_persistence"],
                s["mae_ewma"],
                100 * s["skill"],
                100 * s["mape"],
                100 * s["coverage"],
                100 * f.coverage,
            )
            extra = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in s.items()}
            out.append(
                Prediction(
                    kind="bandwidth_accuracy",
                    node_id="fleet",
                    event_time=when,
                    model_version=f.model_version,
                    target="throughput_mbps",
                    horizon=h,
                    value=round(s["mae"], 4),
                    extra=extra,
                )
            )
        return out

    def handle(self, records: list[tuple[Message, Any]]) -> list[Output]:
        """Loop handler: forecast and encode; checkpoint once a new model version arrived.

        The checkpoint is taken at the start of the *next* batch: by then the loop has produced
        and committed the previous one, so the state on disk matches the committed offsets
        (a checkpoint ahead of them would skip a re-read batch's outputs after a crash).
        """
        if self.checkpoint_due:
            self.checkpoint(wait=False)
        preds = self.predictions([rec for _m, rec in records])
        self.published += len(preds)
        topic = self.topic
        outs = [Output(topic, p.node_id.encode(), encode(p)) for p in preds]
        if self.forecaster.version_ != self.last_version:
            self.last_version = self.forecaster.version_
            self.checkpoint_due = True
        return outs


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.bandwidth`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.bandwidth",
        description="Forecast each link's throughput with an LSTM retrained in micro-batches; "
        "publish forecasts with intervals and running accuracy against persistence/EWMA.",
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable.",
    )
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest record")
    p.add_argument(
        "--from-file", metavar="FILE.jsonl", help="offline: read a synthetic recording, no Kafka"
    )
    p.add_argument("--report", metavar="FILE.json", help="write the final accuracy summary here")
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--max-records", type=int)
    p.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without records"
    )
    p.add_argument("--batch-size", type=int, help="records per poll (default DWCP_BATCH_SIZE)")
    p.add_argument("--state-dir", help="checkpoint folder (default DWCP_STATE_DIR)")
    p.add_argument("--no-checkpoint", action="store_true", help="neither restore nor save state")
    m = p.add_argument_group("model")
    m.add_argument("--horizons", default="1,5,15", help="steps ahead (default 1,5,15)")
    m.add_argument("--window", type=int, default=30, help="steps per window (default 30)")
    m.add_argument("--units", type=int, default=32, help="LSTM units (default 32)")
    m.add_argument("--warmup-windows", type=int, default=20000, help="windows before the first fit")
    m.add_argument("--retrain-every", type=int, default=50000, help="records between retrains")
    m.add_argument("--retrain-windows", type=int, default=16384, help="windows per retrain")
    m.add_argument("--retrain-epochs", type=int, default=1)
    m.add_argument("--no-retrain", dest="retrain", action="store_false", help="only drift retrains")
    m.add_argument("--sync-retrain", action="store_true", help="retrain inline (reproducible)")
    m.add_argument("--coverage", type=float, default=0.9, help="nominal interval coverage")
    m.add_argument("--ewma-alpha", type=float, default=0.3, help="EWMA baseline smoothing")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--fit-batch", type=int, default=256, help="training minibatch size")
    m.add_argument(
        "--retrain-pause",
        type=float,
        default=0.01,
        help="seconds a background retrain sleeps per minibatch",
    )
    m.add_argument("--tf-threads", type=int, default=2, help="TensorFlow intra-op threads")
    m.add_argument(
        "--publish-every", type=int, default=1, help="publish every Nth interval per link"
    )
    m.add_argument(
        "--accuracy-every", type=int, default=100000, help="records between accuracy logs"
    )
    m.add_argument(
        "--reset-accuracy-at",
        type=int,
        default=0,
        help="offline: restart the figures after N records",
    )
    Settings.add_arguments(p)
    return p


def run_file(app: BandwidthApp, path: str, batch: int, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Offline mode: feed a recording through the app (no Kafka); return a summary."""
    t0 = time.perf_counter()
    n = n_pred = 0
    reset_at = app.args.reset_accuracy_at
    for recs in iter_file_batches(path, batch):
        if reset_at and n < reset_at <= n + len(recs):
            app.forecaster.accuracy_.reset()
        n_pred += len(app.predictions(recs))
        n += len(recs)
        if app.args.max_records and n >= app.args.max_records:
            break
    app.forecaster.finish()
    secs = time.perf_counter() - t0
    summary = summarize(app, n, n_pred, secs)
    print(json.dumps(summary, indent=1), file=out)
    return summary


def summarize(app: BandwidthApp, n: int, n_pred: int, secs: float) -> dict[str, Any]:
    """A JSON-able summary of a run: accuracy per horizon, retrains, rates."""
    f = app.forecaster
    acc = {
        str(h): {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
        for h, s in f.accuracy_.summary().items()
    }
    return {
        "records": n,
        "predictions": n_pred,
        "seconds": round(secs, 2),
        "records_per_s": round(n / secs, 1) if secs else None,
        "model_version": f.model_version,
        "retrains": f.retrains_,
        "drift_detections": f.drift_.detections,
        "coverage_nominal": f.coverage,
        "accuracy": acc,
    }


def group_id(settings: Settings) -> str:
    """The consumer group: ``--group-id``/``DWCP_GROUP_ID`` if set, else ``dwcp-bandwidth``.

    Checkpoints are kept per group (``<state_dir>/bandwidth-<group>/``).
    """
    return settings.consumer_group("bandwidth")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    try:
        extra = {"state_dir": args.state_dir, "batch_size": args.batch_size}
        settings = Settings.from_args(args, os.environ, **extra)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("kafka").setLevel(logging.WARNING)
        from models.forecast import tfrt
        from models.forecast.online import OnlineForecaster  # no TensorFlow until a model is built

        tfrt.configure_threads(args.tf_threads, 1)
        group = group_id(settings)
        store = (
            None
            if args.no_checkpoint or args.from_file
            else CheckpointStore(settings.state_dir, f"{NAME}-{group}", expect=OnlineForecaster)
        )
        app = BandwidthApp(settings, args, store)
        if args.from_file:
            summary = run_file(app, args.from_file, settings.batch_size)
            if args.report:
                Path(args.report).write_text(json.dumps(summary, indent=1))
            return 0
        stats = run_consumer(
            settings,
            [settings.topic("telemetry")],
            app.handle,
            group_id=group,
            from_beginning=args.from_beginning,
            max_records=args.max_records,
            max_seconds=args.max_seconds,
            idle_timeout=args.idle_timeout,
            on_close=app.checkpoint,
            on_progress=lambda s: _progress(s, app),
            progress_interval=10.0,
        )
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"bandwidth: stopped ({stats.stop_reason}) after {stats.records_in:,d} records, "
        f"{app.published:,d} predictions, {app.forecaster.model_version}",
        file=sys.stderr,
    )
    return 0


def _progress(stats: LoopStats, app: BandwidthApp) -> None:
    log.info(
        "%d records (%.0f/s), %d predictions, %s",
        stats.records_in,
        stats.window_rate,
        app.published,
        app.forecaster.model_version,
    )


if __name__ == "__main__":
    sys.exit(main())
