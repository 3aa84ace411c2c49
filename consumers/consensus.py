"""``python -m consumers.consensus``: an LSTM autoencoder on consensus latency raises alerts.

Reads telemetry, folds each node's link records of one interval into a node sample
(consensus latency, CPU, fastest RTT), scores windows of them with an LSTM autoencoder
(:mod:`models.autoencoder`) and turns the scores into incidents with the shared lifecycle of
:class:`models.alerting.IncidentTracker` (source ``"consensus-ae"``, category
``consensus_degradation``): the same alert schema, hysteresis and stable ids as the reliability
detector. Alerts go to the alerts topic. The autoencoder is retrained in the background on
unflagged windows and swapped in with a new version; state is checkpointed under
``DWCP_STATE_DIR``/consensus-<group> after each new version and on shutdown, and restored on start.

    python -m consumers.consensus --from-beginning
    python -m consumers.consensus --from-file .cache/lstm/cons.jsonl \\
        --labels .cache/lstm/cons.labels.jsonl --report out.json      # offline recall / FPR
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consumers.bandwidth import iter_file_batches
from models.alerting import IncidentTracker
from stream.checkpoint import CheckpointStore
from stream.errors import DwcpError
from stream.kafka import Message
from stream.loop import LoopStats, Output, run_consumer
from stream.records import Alert, MetricDeviation, encode
from stream.settings import Settings

log = logging.getLogger("consumers.consensus")
NAME = "consensus"
SOURCE = "consensus-ae"


class ConsensusApp:
    """The consumer's state: sampler, detector, incident tracker and checkpoints."""

    def __init__(self, settings: Settings, args: argparse.Namespace, store: CheckpointStore | None):
        from models.autoencoder.features import NodeSampler

        self.settings, self.args, self.store = settings, args, store
        self.topic = settings.topic("alerts")
        restored = self._restore()
        if restored is not None:
            self.sampler, self.detector, self.tracker = restored
        else:
            self.sampler, self.detector = NodeSampler(), self._new()
            self.tracker = IncidentTracker(
                SOURCE, open_after=args.open_after, resolve_after_s=args.resolve_after
            )
        self.last_version = self.detector.version_
        self.checkpoint_due = False
        self.alerts = 0
        self.scored: list[tuple[Any, float, float, bool]] = []  # offline evaluation only
        self.keep_scores = False

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
        log.info("restored checkpoint %s: %s", meta.get("version"), state[1].model_version)
        return state

    def checkpoint(self, wait: bool = True) -> None:
        """Save sampler, detector and tracker (``wait``: let a running retrain finish first)."""
        self.checkpoint_due = False
        if self.store is None:
            return
        if wait:
            self.detector.finish()
        v = self.store.save(
            (self.sampler, self.detector, self.tracker),
            meta={"model_version": self.detector.model_version, "samples": self.detector.samples_},
        )
        log.info("checkpoint %d saved (%s)", v, self.detector.model_version)

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
        for k, raw, score, dev, version, thr in zip(
            out.index.tolist(),
            out.raw.tolist(),
            out.score.tolist(),
            out.deviation.tolist(),
            out.versions.tolist(),
            out.thresholds.tolist(),
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
                    reason=f"reconstruction error {raw:.3g} vs threshold {thr:.3g}",
                )
            )
        return alerts

    def handle(self, records: list[tuple[Message, Any]]) -> list[Output]:
        """Loop handler: score and encode alerts; checkpoint once a new model version arrived.

        The checkpoint is taken at the start of the *next* batch, when the previous one has been
        produced and committed, so the saved tracker never runs ahead of the committed offsets.
        """
        if self.checkpoint_due:
            self.checkpoint(wait=False)
        alerts = self.alerts_for([rec for _m, rec in records])
        self.alerts += len(alerts)
        outs = [Output(self.topic, a.node_id.encode(), encode(a)) for a in alerts]
        if self.detector.version_ != self.last_version:
            self.last_version = self.detector.version_
            self.checkpoint_due = True
        return outs


def evaluate(
    scored: list[tuple[Any, float, float, bool]],
    alerts: list[Alert],
    labels: list[dict[str, Any]],
    window_s: float,
    after: float,
) -> dict[str, Any]:
    """Recall of labelled consensus incidents (an ``open`` alert between start and end +
    ``window_s``) and FPR of normal windows (no incident of any kind overlapping the window).
    Only incidents starting and windows ending after ``after`` (the warm-up) count."""
    spans: dict[Any, list[tuple[float, float, str]]] = {}
    for lab in labels:
        t0 = dt.datetime.fromisoformat(lab["start"]).timestamp()
        t1 = dt.datetime.fromisoformat(lab["end"]).timestamp()
        spans.setdefault(lab["node_id"], []).append((t0, t1, lab["category"]))
    normal = fp = pos = tp = 0
    for node, ts, _score, flagged in scored:
        if ts < after:
            continue
        hit = [c for t0, t1, c in spans.get(node, ()) if t0 - 5 <= ts and ts - window_s <= t1 + 5]
        if not hit:
            normal += 1
            fp += flagged
        elif all(c == "consensus_degradation" for c in hit):
            inside = [1 for t0, t1, _c in spans[node] if t0 <= ts <= t1]
            if inside:
                pos += 1
                tp += flagged
    opens = [(a.node_id, a.event_time.timestamp()) for a in alerts if a.status == "open"]
    incidents = [
        lab
        for lab in labels
        if lab["category"] == "consensus_degradation"
        and dt.datetime.fromisoformat(lab["start"]).timestamp() >= after
    ]
    by_sev: dict[str, list[int]] = {}
    detected = 0
    for lab in incidents:
        t0 = dt.datetime.fromisoformat(lab["start"]).timestamp()
        t1 = dt.datetime.fromisoformat(lab["end"]).timestamp() + window_s
        ok = any(n == lab["node_id"] and t0 <= t <= t1 for n, t in opens)
        detected += ok
        by_sev.setdefault(lab["severity"], [0, 0])
        by_sev[lab["severity"]][0] += ok
        by_sev[lab["severity"]][1] += 1
    spans_all = [(n, t0, t1) for n, v in spans.items() for t0, t1, _c in v]
    false_opens = sum(
        not any(n == m and t0 - 5 <= t <= t1 + window_s for m, t0, t1 in spans_all)
        for n, t in opens
    )
    return {
        "incidents": len(incidents),
        "detected": detected,
        "recall_incidents": round(detected / len(incidents), 4) if incidents else None,
        "recall_by_severity": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_sev.items())},
        "normal_windows": normal,
        "fpr_windows": round(fp / normal, 4) if normal else None,
        "incident_windows": pos,
        "recall_windows": round(tp / pos, 4) if pos else None,
        "alerts_open": len(opens),
        "false_alert_opens": false_opens,
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.consensus`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.consensus",
        description="Detect consensus-latency degradation with an LSTM autoencoder retrained in "
        "micro-batches; publish incident alerts (open/update/resolved) to the alerts topic.",
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable.",
    )
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest record")
    p.add_argument("--from-file", metavar="FILE.jsonl", help="offline: read a synthetic recording")
    p.add_argument("--labels", metavar="FILE.jsonl", help="offline: labels to score recall / FPR")
    p.add_argument("--report", metavar="FILE.json", help="write the offline summary here")
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--max-records", type=int)
    p.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without records"
    )
    p.add_argument("--batch-size", type=int, help="records per poll (default DWCP_BATCH_SIZE)")
    p.add_argument("--state-dir", help="checkpoint folder (default DWCP_STATE_DIR)")
    p.add_argument("--no-checkpoint", action="store_true", help="neither restore nor save state")
    m = p.add_argument_group("model")
    m.add_argument("--window", type=int, default=30, help="samples per window (default 30)")
    m.add_argument("--units", type=int, default=16, help="LSTM units (default 16)")
    m.add_argument("--latent", type=int, default=4, help="bottleneck size (default 4)")
    m.add_argument(
        "--baseline-alpha", type=float, default=1 / 300, help="node baseline EWMA weight"
    )
    m.add_argument("--warmup-windows", type=int, default=8000)
    m.add_argument("--retrain-every", type=int, default=20000, help="node samples between retrains")
    m.add_argument("--no-retrain", dest="retrain", action="store_false")
    m.add_argument("--sync-retrain", action="store_true", help="retrain inline (reproducible)")
    m.add_argument(
        "--threshold-k", type=float, default=4.0, help="robust z of the log error threshold"
    )
    m.add_argument("--open-after", type=int, default=2, help="flagged windows in a row to open")
    m.add_argument("--resolve-after", type=float, default=60.0, help="quiet seconds to resolve")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--fit-batch", type=int, default=256, help="training minibatch size")
    m.add_argument(
        "--retrain-pause",
        type=float,
        default=0.01,
        help="seconds a background retrain sleeps per minibatch",
    )
    m.add_argument("--tf-threads", type=int, default=2, help="TensorFlow intra-op threads")
    Settings.add_arguments(p)
    return p


def run_file(app: ConsensusApp, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """Offline mode over a recording (and its labels): alerts, recall and FPR."""
    app.keep_scores = bool(args.labels)
    t0 = time.perf_counter()
    n, alerts = 0, []
    first_ts = None
    for recs in iter_file_batches(args.from_file, batch):
        if first_ts is None and recs:
            first_ts = recs[0].timestamp.timestamp()
        alerts.extend(app.alerts_for(recs))
        n += len(recs)
        if args.max_records and n >= args.max_records:
            break
    app.detector.finish()
    secs = time.perf_counter() - t0
    d = app.detector
    summary: dict[str, Any] = {
        "records": n,
        "seconds": round(secs, 2),
        "records_per_s": round(n / secs, 1) if secs else None,
        "model_version": d.model_version,
        "retrains": d.retrains_,
        "threshold": d.threshold_.value,
        "alerts": len(alerts),
    }
    if args.labels:
        labels = [
            orjson.loads(line) for line in Path(args.labels).read_bytes().splitlines() if line
        ]
        scored_ts = [ts for _n, ts, _s, _f in app.scored]
        after = min(scored_ts) if scored_ts else 0.0
        interval = _interval(app)
        summary["evaluation"] = evaluate(app.scored, alerts, labels, args.window * interval, after)
        summary["evaluated_after_s"] = round(after - (first_ts or after), 1)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary


def _interval(app: ConsensusApp) -> float:
    hist = app.detector.history_
    if not len(hist) or hist.count[0] < 2:
        return 1.0
    r, c = 0, int(hist.count[0])
    return float(
        hist.times_at(np.array([r]), np.array([c - 1]))[0]
        - hist.times_at(np.array([r]), np.array([c - 2]))[0]
    )


def group_id(settings: Settings) -> str:
    """The consumer group: ``--group-id``/``DWCP_GROUP_ID`` if set, else ``dwcp-consensus``.

    Checkpoints are kept per group (``<state_dir>/consensus-<group>/``).
    """
    return settings.consumer_group("consensus")


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

        tfrt.configure_threads(args.tf_threads, 1)
        group = group_id(settings)
        store = (
            None
            if args.no_checkpoint or args.from_file
            else CheckpointStore(settings.state_dir, f"{NAME}-{group}", expect=tuple)
        )
        app = ConsensusApp(settings, args, store)
        if args.from_file:
            summary = run_file(app, args, settings.batch_size)
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
        f"consensus: stopped ({stats.stop_reason}) after {stats.records_in:,d} records, "
        f"{app.alerts:,d} alerts, {app.detector.model_version}",
        file=sys.stderr,
    )
    return 0


def _progress(stats: LoopStats, app: ConsensusApp) -> None:
    log.info(
        "%d records (%.0f/s), %d alerts, open incidents %d, %s",
        stats.records_in,
        stats.window_rate,
        app.alerts,
        len(app.tracker.open_incidents()),
        app.detector.model_version,
    )


if __name__ == "__main__":
    sys.exit(main())
