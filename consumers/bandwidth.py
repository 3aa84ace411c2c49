"""``python -m consumers.bandwidth``: ensemble throughput forecasts per link (an LSTM retrained
on the stream, persistence, EWMA, harmonic mean), combined online from recent error.

Reads telemetry, keeps a sliding window per link (node_id, peer_id), and once the warm-up
windows exist forecasts ``throughput_mbps`` 1, 5 and 15 intervals ahead with a prediction
interval (:mod:`models.forecast`). Each forecast goes to the predictions topic as a
:class:`stream.records.Prediction` (``kind="bandwidth_forecast"``, horizon, value, lower,
upper, LSTM version, event time of the last observation, ``extra`` = the leading member and
the ensemble weights that made it). As actual values arrive each
forecast is scored beside the LSTM alone and every baseline; the running figures are logged and published
(``kind="bandwidth_accuracy"``, node_id ``"fleet"``, value = MAE) every ``--accuracy-every``
records. The model is retrained in micro-batches in a worker process (``--train-in``) while
inference goes on (every ``--retrain-every`` records, or earlier when ADWIN sees the error
rise), then swapped in with a new version. It runs in the application shell
(:mod:`stream.app`): state (model, scalers, buffers, accuracy) is checkpointed under
``DWCP_STATE_DIR``/bandwidth-<group> right after the commit that follows a new version, on the
shell's schedule and on shutdown, and restored on start.

    python -m consumers.bandwidth --from-beginning
    python -m consumers.bandwidth --from-file .cache/lstm/bw.jsonl --summary out.json   # offline
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from consumers.lstm import LSTMProcessor
from stream import app
from stream.kafka import Message
from stream.loop import Output
from stream.metrics import ProcessorMetrics
from stream.records import Prediction, decode, encode, round_floats
from stream.settings import Settings

log = logging.getLogger("consumers.bandwidth")
NAME = "bandwidth"


class BandwidthProcessor(LSTMProcessor):
    """The online forecaster in the application shell; ``state()`` is the forecaster."""

    name = "bandwidth"
    outputs = ("predictions",)
    state_format = 2  # 2: the ensemble forecaster (older checkpoints start fresh, with a warning)
    description = (
        "Forecast each link's throughput with an online ensemble (LSTM retrained in micro-batches, "
        "persistence, EWMA, harmonic mean); publish "
        "forecasts with intervals and running accuracy beside the LSTM alone and every baseline."
    )

    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        self.args = args
        self.topic = settings.topic("predictions")
        self.forecaster = state if state is not None else self._new()
        self.forecaster.fit_where(not args.sync_retrain, args.retrain_pause)  # also if restored
        self.train_where(self.forecaster, args)
        self.published = 0
        # the forecaster reports its accuracy at step boundaries (the same wherever the records
        # come from); set here too for a forecaster restored from a checkpoint
        self.forecaster.report_every = args.accuracy_every
        self.forecaster.reset_accuracy_at = args.reset_accuracy_at
        # a whole batch's LSTM forecasts in one inference, prefetched beside the other
        # processors (a backlog's batches are thousands of records; any value gives the same
        # forecasts)
        self.forecaster.infer_ahead = max(self.forecaster.infer_ahead, settings.batch_size)
        self.last_version = self.forecaster.version_
        self.outputs_on = True
        self._infer_pool: ThreadPoolExecutor | None = None
        self._prefetched: tuple[Any, ...] | None = None  # (batch, keep, inputs, Prefetched)

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
            rule=a.ensemble_rule,
            memory=a.ensemble_memory,
            eta=a.ensemble_eta,
            shrink=a.ensemble_shrink,
            background=not a.sync_retrain,
            batch_size=a.fit_batch,
            retrain_pause_s=a.retrain_pause,
            seed=a.seed,
        )

    lstm_defaults = (32, 20000, 50000)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        m = parser.add_argument_group("bandwidth model")
        m.add_argument("--horizons", default="1,5,15", help="steps ahead (default 1,5,15)")
        cls.add_training_arguments(m)
        m.add_argument("--retrain-windows", type=int, default=16384, help="windows per retrain")
        m.add_argument("--retrain-epochs", type=int, default=1)
        m.add_argument("--coverage", type=float, default=0.9, help="nominal interval coverage")
        m.add_argument("--ewma-alpha", type=float, default=0.3, help="EWMA baseline smoothing")
        m.add_argument(
            "--ensemble-rule",
            choices=("ewa", "ftl"),
            default="ewa",
            help="combine the members by exponentially weighted averaging or follow-the-leader",
        )
        m.add_argument(
            "--ensemble-memory", type=float, default=50.0, help="recent errors per link weighed"
        )
        m.add_argument("--ensemble-eta", type=float, default=20.0, help="EWA temperature")
        m.add_argument(
            "--ensemble-shrink",
            type=float,
            default=1000.0,
            help="pseudo-errors of the fleet's relative errors in every link's weights "
            "(0: each link's own recent errors alone)",
        )
        m.add_argument(
            "--publish-every", type=int, default=1, help="publish every Nth interval per link"
        )
        m.add_argument(
            "--accuracy-every",
            type=int,
            default=100000,
            help="records between accuracy reports (log line and bandwidth_accuracy records, "
            "made at step boundaries)",
        )
        m.add_argument(
            "--reset-accuracy-at",
            type=int,
            default=0,
            help="restart the accuracy figures after N records (e.g. after a warm-up; at the "
            "step boundary, every 100 records, where the count is passed)",
        )

    # -- handling ----------------------------------------------------------------------------
    def prefetch(self, batch: list[tuple[Message, Any]]) -> None:
        """Start the batch's first LSTM inference in a thread, beside the other processors
        (:meth:`OnlineForecaster.prefetch`); :meth:`handle` of the same batch uses it."""
        self._settle_prefetch()
        keep = link_records([rec for _m, rec in batch])
        if not keep:
            return
        if self._infer_pool is None:
            self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="lstm-infer")
        inputs = forecaster_inputs(keep)
        started = self.forecaster.prefetch(*inputs, executor=self._infer_pool)
        self._prefetched = (batch, keep, inputs, started)

    def _settle_prefetch(self) -> tuple[Any, ...] | None:
        """Take the prefetched batch, waiting for its inference (nothing may swap or pickle
        the model while it runs)."""
        got, self._prefetched = self._prefetched, None
        if got is not None and got[3] is not None:
            got[3].wait()
        return got

    def messages(
        self, recs: Sequence[Any], prefetched: tuple[Any, ...] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Feed decoded telemetry to the forecaster; return the ``(key, value)`` records to
        publish: the forecasts (encoded by :func:`encode_forecasts`) and accuracy reports.
        ``prefetched``: what :meth:`prefetch` made of the same records."""
        if prefetched is not None:
            _batch, keep, inputs, started = prefetched
        else:
            keep = link_records(recs)
            inputs, started = (forecaster_inputs(keep) if keep else ()), None
        if not keep:
            return []
        f = self.forecaster
        out = f.process(*inputs, prefetched=started)
        for e in out.events:
            log.info("%s", e)
        msgs: list[tuple[bytes, bytes]] = []
        if self.outputs_on and len(out.index):
            pick = np.arange(len(out.index))
            every = self.args.publish_every
            if every > 1:  # every Nth interval per link
                step = f.interval_ or 1.0
                stamps = np.array([keep[k].timestamp.timestamp() for k in out.index.tolist()])
                pick = np.flatnonzero((stamps / step).astype(np.int64) % every == 0)
            msgs = encode_forecasts(
                [keep[k] for k in out.index[pick].tolist()], f.horizons, out.members,
                out.value[pick], out.lower[pick], out.upper[pick], out.weights[pick],
                out.versions[pick],
            )  # fmt: skip
        for last, version, summary in f.take_reports():
            for p in self.accuracy_records(keep[last].timestamp, version, summary):
                msgs.append((p.node_id.encode(), encode(p)))
        return msgs

    def predictions(self, recs: Sequence[Any]) -> list[Prediction]:
        """:meth:`messages` as :class:`~stream.records.Prediction` records."""
        return [decode(value, Prediction) for _key, value in self.messages(recs)]

    def accuracy_records(
        self, when: Any, version: str, summary: dict[int, Any]
    ) -> list[Prediction]:
        """The running accuracy per horizon as predictions (value = MAE), and a log line."""
        f = self.forecaster
        out = []
        for h, s in summary.items():
            if not s["n"]:
                continue
            log.info(
                "accuracy h=%d n=%d MAE %.2f (LSTM %.2f, persistence %.2f, EWMA %.2f, "
                "harmonic %.2f; skill vs %s %.1f%%) MAPE %.1f%% coverage %.1f%% (nominal %.0f%%)",
                h,
                s["n"],
                s["mae"],
                s["mae_lstm"],
                s["mae_persistence"],
                s["mae_ewma"],
                s["mae_harmonic"],
                s["best_baseline"],
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
                    model_version=version,
                    target="throughput_mbps",
                    horizon=h,
                    value=round(s["mae"], 4),
                    extra=extra,
                )
            )
        return out

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Forecast and encode; ask for a checkpoint once a new model version arrived."""
        got = self._settle_prefetch()
        mine = got if got is not None and got[0] is batch else None
        msgs = self.messages([rec for _m, rec in batch], mine)
        self.published += len(msgs)
        topic = self.topic
        outs = [Output(topic, key, value) for key, value in msgs]
        if self.forecaster.version_ != self.last_version:
            self.last_version = self.forecaster.version_
            self.checkpoint_due = True
        return outs

    def state(self, final: bool = False) -> Any:
        self._settle_prefetch()
        if final:
            self.forecaster.finish()  # a running retrain finishes and is swapped in first
        return self.forecaster

    @property
    def model_version(self) -> str:
        return str(self.forecaster.model_version)

    def status(self) -> str:
        return f"bandwidth: predictions {self.published:,d}  {self.forecaster.model_version}"

    def observe(self, metrics: ProcessorMetrics) -> None:
        """Model version, retrain durations and the running MAE per horizon (the published
        forecast beside every ensemble member: the LSTM and the baselines)."""
        f = self.forecaster
        metrics.model_version(self.model_version)
        fits = f.retrains_
        metrics.fits("lstm", len(fits), lambda k: [x["seconds"] for x in fits[-k:]])
        for h, s in f.accuracy_.summary().items():
            if s["n"]:
                metrics.forecast_error(
                    "throughput_mbps",
                    h,
                    {
                        "published": s["mae"],
                        **{m: s[f"mae_{m}"] for m in f.members},
                    },
                )

    def summary(self) -> dict[str, Any]:
        """Accuracy per horizon, retrains, drift detections."""
        f = self.forecaster
        f.finish()
        acc = {
            str(h): {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
            for h, s in f.accuracy_.summary().items()
        }
        return {
            "records": f.records_,
            "predictions": self.published,
            "model_version": f.model_version,
            "retrains": f.retrains_,
            "drift_detections": f.drift_.detections,
            "coverage_nominal": f.coverage,
            "accuracy": acc,
        }

    def close(self) -> None:
        self._settle_prefetch()
        if self._infer_pool is not None:
            self._infer_pool.shutdown()
        self.forecaster.finish()
        self.release_pool()


def link_records(recs: Sequence[Any]) -> list[Any]:
    """The records a link forecast can use: a peer and a throughput."""
    return [r for r in recs if r.peer_id is not None and r.throughput_mbps is not None]


#: One forecast as :func:`stream.records.encode` writes ``Prediction(kind="bandwidth_forecast",
#: ...)`` (field order, omitted defaults; horizons are >= 1, so ``horizon`` is never omitted).
_FORECAST = (
    b'{"kind":"bandwidth_forecast","node_id":%b,"event_time":%b,'
    b'"model_version":"bandwidth-lstm-v%d","value":%b,"peer_id":%b,"target":"throughput_mbps",'
    b'"horizon":%d,"lower":%b,"upper":%b,"extra":{"member":%b,"weights":{%b}}}'
)


@functools.lru_cache(maxsize=8)
def _weight_pieces(members: tuple[str, ...]) -> np.ndarray:
    """``(M, 1001)`` object array: ``b',"member":w'`` for a weight ``w = k / 1000`` (``b""`` for
    0, which the records leave out)."""
    table = [
        [b"," + encode(m) + b":" + encode(k / 1000.0) if k else b"" for k in range(1001)]
        for m in members
    ]
    return np.array(table, dtype=object)


def encode_forecasts(
    recs: Sequence[Any],
    horizons: Sequence[int],
    members: Sequence[str],
    value: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    weights: np.ndarray,
    versions: np.ndarray,
) -> list[tuple[bytes, bytes]]:
    """``(node key, JSON)`` of each record's forecast per horizon, byte for byte what
    ``encode(Prediction(...))`` gives (tested), 2.5-3x faster
    (``bench/bench_forecast_encoding.py``): the hot path of the consumer. The arrays are the :class:`~models.forecast.online.ForecastBatch` rows of
    ``recs``: value, lower and upper are rounded to 3 decimals; ``extra`` names the member of
    the largest weight (the first one if tied, as ``max`` picks) and the nonzero weights
    rounded to 3; ``versions`` are the LSTM versions.

    Every value and bound goes through one ``encode`` of a list (the same shortest form), cut
    at the commas; each weight, a multiple of 0.001, is looked up in a table of its encodings;
    node ids and times go through ``encode`` each.
    """
    n, H = len(recs), len(horizons)
    if not n:
        return []
    if min(horizons) < 1:
        raise ValueError(f"horizons must be >= 1, got {tuple(horizons)}")
    nums = round_floats(np.stack([value, lower, upper], axis=2), 3)  # (n, H, 3)
    text = encode(nums)[1:-1].split(b",")
    rounded = weights.round(3)  # (n, H, M)
    M = rounded.shape[2]
    lead = rounded.argmax(axis=2).ravel().tolist()
    names = [encode(m) for m in members]
    # the weights' JSON: ',"name":w' per nonzero weight (w = k / 1000, from a table), joined
    rows = rounded.reshape(-1, M)
    k = np.rint(rows * 1000.0)
    exact = ((k >= 0) & (k <= 1000) & (k / 1000.0 == rows)).all(axis=1)
    table = _weight_pieces(tuple(members))
    pieces = table[np.arange(M), np.where(exact[:, None], k, 0).astype(np.int64)]
    weight_js = np.add.reduce(pieces, axis=1).tolist()
    for r in np.flatnonzero(~exact).tolist():  # NaN or out of range: encoded one by one
        weight_js[r] = b"".join(
            b"," + names[m] + b":" + encode(x) for m, x in enumerate(rows[r].tolist()) if x
        )
    version_of = versions.tolist()
    strings: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    msgs = []
    for i, r in enumerate(recs):
        node, peer = r.node_id, r.peer_id
        node_js = strings.get(node) or strings.setdefault(node, encode(node))
        peer_js = strings.get(peer) or strings.setdefault(peer, encode(peer))
        key = keys.get(node) or keys.setdefault(node, node.encode())
        when, version = encode(r.timestamp), version_of[i]
        for j, h in enumerate(horizons):
            a = (i * H + j) * 3
            msg = _FORECAST % (
                node_js, when, version, text[a], peer_js, h, text[a + 1], text[a + 2],
                names[lead[i * H + j]], weight_js[i * H + j][1:],
            )  # fmt: skip
            msgs.append((key, msg))
    return msgs


def forecaster_inputs(keep: Sequence[Any]) -> tuple[Any, ...]:
    """``OnlineForecaster.process`` arguments from link records (a missing value is NaN)."""
    nan = float("nan")
    return (
        [(r.node_id, r.peer_id) for r in keep],
        np.array([r.timestamp.timestamp() for r in keep]),
        np.array([r.throughput_mbps for r in keep]),
        np.array([nan if r.rtt_ms is None else r.rtt_ms for r in keep]),
        np.array([nan if r.jitter_ms is None else r.jitter_ms for r in keep]),
        np.array([nan if r.packet_loss is None else r.packet_loss for r in keep]),
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.bandwidth`` command line."""
    return app.build_parser([BandwidthProcessor], "python -m consumers.bandwidth")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.bandwidth``."""
    return app.main([BandwidthProcessor], argv, "python -m consumers.bandwidth")


if __name__ == "__main__":
    sys.exit(main())
