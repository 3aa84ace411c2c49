"""``python -m consumers.consensus``: an LSTM autoencoder on consensus latency raises alerts.

Reads telemetry, folds each node's link records of one interval into a node sample
(consensus latency, CPU, fastest RTT), scores windows of them with an LSTM autoencoder
(:mod:`models.autoencoder`) and turns the scores into incidents with the shared lifecycle of
:class:`models.alerting.IncidentTracker` (source ``"consensus-ae"``, category
``consensus_degradation``): the same alert schema, hysteresis and stable ids as the reliability
detector. Alerts go to the alerts topic. The autoencoder is retrained in the background on
unflagged windows and swapped in with a new version. It runs in the application shell
(:mod:`stream.app`): state (sampler, detector, tracker) is checkpointed under
``DWCP_STATE_DIR``/consensus-<group> right after the commit that follows a new version, on the
shell's schedule and on shutdown, and restored on start. With ``--labels`` (a file run) the
summary scores recall and FPR.

    python -m consumers.consensus --from-beginning
    python -m consumers.consensus --from-file .cache/lstm/cons.jsonl \\
        --labels .cache/lstm/cons.labels.jsonl --summary out.json     # offline recall / FPR
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consumers.lstm import LSTMProcessor
from models.alerting import IncidentTracker
from models.evaluation import evaluate_windows
from stream import app
from stream.kafka import Message
from stream.loop import Output
from stream.metrics import ProcessorMetrics
from stream.records import Alert, MetricDeviation, encode
from stream.settings import Settings

log = logging.getLogger("consumers.consensus")
NAME = "consensus"
SOURCE = "consensus-ae"


class ConsensusProcessor(LSTMProcessor):
    """Sampler, detector and incident tracker in the application shell."""

    name = "consensus"
    outputs = ("alerts",)
    description = (
        "Detect consensus-latency degradation with an LSTM autoencoder retrained in "
        "micro-batches; publish incident alerts (open/update/resolved) to the alerts topic."
    )

    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        from models.autoencoder.features import NodeSampler

        self.args = args
        self.topic = settings.topic("alerts")
        if state is not None:
            self.sampler, self.detector, self.tracker = state
        else:
            self.sampler, self.detector = NodeSampler(), self._new()
            self.tracker = IncidentTracker(
                SOURCE,
                open_after=args.open_after,
                resolve_after_s=args.resolve_after,
                confirm_s=args.confirm_s,
            )
        for knob, (old, new) in self.tracker.retune(confirm_s=args.confirm_s).items():
            log.info("%s %s -> %s (restored state, this run's flag)", knob, old, new)
        self.detector.fit_where(not args.sync_retrain, args.retrain_pause)  # also if restored
        self.train_where(self.detector, args)
        self.last_version = self.detector.version_
        self.alerts = 0
        self.keep_scores = bool(args.labels)
        self.scored: list[tuple[Any, float, float, bool]] = []  # for --labels only
        self.opened: list[Alert] = []  # for --labels only

    def _new(self) -> Any:
        from models.autoencoder.detector import ConsensusDetector

        a = self.args
        return ConsensusDetector(
            window=a.window,
            units=a.units,
            latent=a.latent,
            baseline_alpha=a.baseline_alpha,
            warmup_windows=a.warmup_windows,
            retrain_every=a.retrain_every if a.retrain else 10**15,
            threshold_k=a.threshold_k,
            feature_weights=a.feature_weights,
            volatility_ratio=a.volatility_ratio,
            volatility_window=a.volatility_window,
            volatility_min_spread=a.volatility_min_spread,
            background=not a.sync_retrain,
            batch_size=a.fit_batch,
            retrain_pause_s=a.retrain_pause,
            seed=a.seed,
        )

    lstm_defaults = (16, 8000, 20000)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        m = parser.add_argument_group("consensus model")
        cls.add_training_arguments(m)
        m.add_argument("--latent", type=int, default=4, help="bottleneck size (default 4)")
        m.add_argument(
            "--baseline-alpha", type=float, default=1 / 300, help="node baseline EWMA weight"
        )
        m.add_argument(
            "--threshold-k", type=float, default=4.0, help="robust z of the log error threshold"
        )
        m.add_argument(
            "--feature-weights",
            type=_weights,
            default=(4.0, 0.0, 1.0),
            metavar="C,R,U",
            help="weights of the reconstruction error's features: consensus, fastest-link RTT, "
            "CPU (default 4,0,1: the RTT is context the model reads, but a slow link is the "
            "reliability detector's incident, not a consensus one)",
        )
        m.add_argument(
            "--volatility-ratio",
            type=float,
            default=2.0,
            help="also flag a rising node whose consensus latency jumps between samples this many "
            "times more than it normally does (robust spread of the last --volatility-window "
            "changes) and by at least --volatility-min-spread: the small degradations a "
            "window's error misses (default 2.0; 0: off)",
        )
        m.add_argument(
            "--volatility-min-spread",
            type=float,
            default=0.05,
            help="smallest recent spread of log consensus latency that may flag (default 0.05, "
            "about 5%% from sample to sample; 0: the ratio alone)",
        )
        m.add_argument(
            "--volatility-window",
            type=int,
            default=12,
            help="changes in the recent spread (default 12)",
        )
        m.add_argument("--open-after", type=int, default=2, help="flagged windows in a row to open")
        m.add_argument("--resolve-after", type=float, default=60.0, help="quiet seconds to resolve")
        m.add_argument(
            "--confirm-s",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="the precision/recall knob, as the reliability consumer's: a flagged streak "
            "opens an incident only once it has lasted this many seconds of event time. "
            "Default 0: at once",
        )
        m.add_argument(
            "--labels", metavar="FILE.jsonl", help="score recall / FPR against these labels"
        )

    def alerts_for(self, recs: Sequence[Any]) -> list[Alert]:
        """Feed decoded telemetry; return the alerts it causes."""
        sampler = self.sampler
        for r in recs:
            if r.consensus_latency_ms is None:
                continue
            sampler.add(
                r.node_id,
                r.timestamp.timestamp(),
                cons=r.consensus_latency_ms,
                cpu=r.cpu_util if r.cpu_util is not None else np.nan,
                rtt=r.rtt_ms if r.rtt_ms is not None else np.nan,
                region=r.region,
            )
        samples = sampler.pop()
        if not samples:
            return []
        det = self.detector
        out = det.process(samples)
        for e in out.events:
            log.info("%s", e)
        alerts: list[Alert] = []
        observe = self.tracker.observe
        c = det.volatility_ratio
        for k, raw, score, dev, version, thr, vol in zip(
            out.index.tolist(),
            out.raw.tolist(),
            out.score.tolist(),
            out.deviation.tolist(),
            out.versions.tolist(),
            out.thresholds.tolist(),
            out.volatility.tolist(),
            strict=True,
        ):
            versions = {"consensus-ae": f"consensus-ae-v{version}"}
            s = samples[k]
            when = dt.datetime.fromtimestamp(s.ts, dt.UTC)
            if self.keep_scores:
                self.scored.append((s.node, s.ts, score, score >= 0.5))
            alerts.extend(
                observe(
                    s.node,
                    when,
                    score,
                    0.5,
                    category="consensus_degradation",
                    top_metrics=[
                        MetricDeviation(
                            name="consensus_latency_ms",
                            value=s.cons,
                            baseline=round(s.cons / float(np.exp(dev)), 3),
                            zscore=round(dev / 0.12, 2),
                        )
                    ],
                    model_versions=versions,
                    region=s.region,
                    reason=f"reconstruction error {raw:.3g} vs threshold {thr:.3g}"
                    if raw >= thr or not c
                    else f"consensus latency erratic: {vol:.2g} vs {c:g} (recent vs normal spread "
                    "of its changes, capped by their size)",
                )
            )
        return alerts

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Score and encode alerts; ask for a checkpoint once a new model version arrived."""
        alerts = self.alerts_for([rec for _m, rec in batch])
        self.alerts += len(alerts)
        if self.keep_scores:
            self.opened += [a for a in alerts if a.status == "open"]
        outs = [Output(self.topic, a.node_id.encode(), encode(a)) for a in alerts]
        if self.detector.version_ != self.last_version:
            self.last_version = self.detector.version_
            self.checkpoint_due = True
        return outs

    def state(self, final: bool = False) -> Any:
        if final:
            self.detector.finish()
        return self.sampler, self.detector, self.tracker

    @property
    def model_version(self) -> str:
        return str(self.detector.model_version)

    def status(self) -> str:
        return (
            f"consensus: alerts {self.alerts:,d}  open incidents "
            f"{len(self.tracker.open_incidents()):,d}  {self.detector.model_version}"
        )

    def observe(self, metrics: ProcessorMetrics) -> None:
        """Model version, open incidents and the autoencoder's retrain durations."""
        metrics.model_version(self.model_version)
        metrics.open_incidents(len(self.tracker.open_incidents()))
        fits = self.detector.retrains_
        metrics.fits("lstm-autoencoder", len(fits), lambda k: [x["seconds"] for x in fits[-k:]])

    def summary(self) -> dict[str, Any]:
        """Model, retrains, threshold, alerts; with ``--labels`` recall and FPR."""
        d = self.detector
        d.finish()
        out: dict[str, Any] = {
            "model_version": d.model_version,
            "retrains": d.retrains_,
            "threshold": d.threshold_.value,
            "alerts": self.alerts,
        }
        if self.args.labels:
            labels = [
                orjson.loads(line)
                for line in Path(self.args.labels).read_bytes().splitlines()
                if line.strip()
            ]
            scored_ts = [ts for _n, ts, _s, _f in self.scored]
            after = min(scored_ts) if scored_ts else 0.0
            window_s = self.args.window * _interval(self)
            out["evaluation"] = evaluate_windows(self.scored, self.opened, labels, window_s, after)
        return out

    def close(self) -> None:
        self.detector.finish()
        self.release_pool()


def _interval(proc: ConsensusProcessor) -> float:
    hist = proc.detector.history_
    if not len(hist) or hist.count[0] < 2:
        return 1.0
    r, c = 0, int(hist.count[0])
    return float(
        hist.times_at(np.array([r]), np.array([c - 1]))[0]
        - hist.times_at(np.array([r]), np.array([c - 2]))[0]
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.consensus`` command line."""
    return app.build_parser([ConsensusProcessor], "python -m consumers.consensus")


def _weights(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(
            f"--feature-weights wants three non-negative numbers, not all 0 (got {text!r})"
        )
    return parts  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.consensus``."""
    return app.main([ConsensusProcessor], argv, "python -m consumers.consensus")


if __name__ == "__main__":
    sys.exit(main())
