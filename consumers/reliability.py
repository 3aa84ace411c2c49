"""``python -m consumers.reliability``: score telemetry, publish incident alerts.

Runs in the application shell (:mod:`stream.app`), from the telemetry topic or, with
``--from-file``, from a recording (JSON lines, or a CSV mapped with ``--column``/``--set``)
through the same loop, validation and dead letters. Every record is scored by
:class:`models.reliability.ReliabilityDetector` (river Half-Space Trees + an IsolationForest
refit in the background, in a worker process by default: ``--refit-in``) and alerts (open ->
update -> resolved, stable incident ids) go to the alerts topic, keyed by node. The detector is
checkpointed by the shell's rule (after a commit every ``--checkpoint-interval`` seconds, on
revoke, on shutdown) under ``<state-dir>/reliability-<group>/`` and restored on start.

Offline extras, for any run: ``--scores-output`` writes one score in [0, 1] per scored record
(CSV or JSON lines) with each component's calibrated score beside it (:data:`COMPONENTS`);
``--labels`` evaluates the run against ground truth in the summary (``--summary FILE.json``)
and, with ``--report-dir``, as JSON + Markdown (:mod:`models.evaluation`). A file run refits the forest inline at deterministic record counts
(``--param background=false``, the default there), so a file scores the same every time for a
given ``--seed``. Background refits (the default on the stream) are installed
``forest_swap_after`` learned records after they start (:data:`SWAP_AFTER`), not when they
happen to be ready, so a live run gives the same alerts every time for the same records, and
a file run with ``--param forest_swap_after=5000`` gives exactly the live answer.

Examples::

    python -m consumers.reliability --from-beginning
    python -m consumers.reliability --from-file .cache/rel/s2.jsonl --scores-output .cache/rel/s2.scores.csv \\
        --labels .cache/rel/s2.labels.jsonl --report-dir reports/reliability
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import orjson

from models.evaluation import RecordFlag, evaluate
from models.reliability import ReliabilityDetector, precompile
from models.reliability.detector import DETECTORS
from models.reliability.forest import warm_fit
from stream import app, workers
from stream.errors import DwcpError, SettingsError
from stream.kafka import Message
from stream.loop import Output
from stream.metrics import ProcessorMetrics
from stream.records import Alert, IncidentLabel, decode, encode
from stream.settings import Settings

log = logging.getLogger("consumers.reliability")
REFIT_NICE = 10


class ReliabilityProcessor(app.Processor):
    """The detector in the application shell; ``state()`` holds the detector (and, with
    ``--labels``, what is being evaluated).

    The shell hands records on in event-time order across partitions (:mod:`stream.alignment`),
    so the detector's own watermark (the newest event time it has seen) is the stream's: a
    slow partition cannot make its nodes look silent, and nothing depends on how the stream
    was cut into batches.
    """

    name = "reliability"
    outputs = ("alerts",)
    state_format = 4  # 4: ticks emitted as the watermark passes (older checkpoints start fresh)
    description = (
        "Score every telemetry record with river Half-Space Trees and a background-refit "
        "IsolationForest (per-node context features, calibrated and combined) and publish "
        "incident alerts with a lifecycle on the alerts topic."
    )

    shardable = True

    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        self.args = args
        self.topic = settings.topic("alerts")
        self.alerts = 0
        self.keep = bool(args.labels)
        self.scores = _ScoreWriter(args.scores_output)
        self.pool: Executor | None = None
        # one detector (and what --labels evaluates) per shard: {0: ...} without --state-shards
        self.shards: dict[int, _Shard] = {}
        if settings.state_shards == 1:
            self.add_shard(0, state)

    def add_shard(self, shard: int, state: Any | None) -> None:
        state = state or {}
        restored = state.get("detector")
        one = _Shard(restored or self._new(self.args))
        if restored is not None:  # refits run where this run says, not where the saver's did
            params = self._params(self.args)
            one.detector.forest_.run_where(params["background"], params.get("forest_swap_after"))
            # and the alerting knobs are this run's: they decide alerts, not what was learned
            knobs = {k: params[k] for k in ("confirm_s", "explained_only")}
            for knob, (old, new) in one.detector.tracker_.retune(**knobs).items():
                log.info("%s %s -> %s (restored state, this run's flag)", knob, old, new)
        # what --labels evaluates: kept in the checkpoint, so a restarted run is judged whole
        if self.keep and state.get("evaluation"):
            one.flags, one.alerts_seen = state["evaluation"]
        forest = one.detector.forest_
        forest.set_executor(self._refit_pool() if forest.background else None)
        self.shards[shard] = one

    def _refit_pool(self) -> Executor | None:
        """The refit worker every shard shares (started on first use; None: a thread each)."""
        if self.pool is None:
            self.pool = refit_pool(self.args.refit_in)
        return self.pool

    def ready(self) -> None:
        """Load the detector's compiled loops from numba's cache now (about 0.25 s, else at
        the first records) and start the refit worker when refits run in the background (a
        process pool starts its worker and imports scikit-learn beside the group's join)."""
        precompile()
        if self._params(self.args).get("background"):
            self._refit_pool()

    def drop_shard(self, shard: int) -> None:
        self.shards.pop(shard).detector.forest_.set_executor(None)

    @property
    def detector(self) -> ReliabilityDetector:
        """The detector of a one-state run (shard 0)."""
        return self.shards[0].detector

    @staticmethod
    def _params(args: argparse.Namespace) -> dict[str, Any]:
        params = detector_params(args, background=not args.from_file)
        if params.get("background"):  # background fits, installed where the records say
            params.setdefault("forest_swap_after", SWAP_AFTER)
        return params

    @classmethod
    def _new(cls, args: argparse.Namespace) -> ReliabilityDetector:
        params = cls._params(args)
        try:
            return ReliabilityDetector(**params)
        except (TypeError, ValueError) as e:  # a --param the detector refuses: say which
            raise SettingsError(f"bad detector parameter (--param): {e}") from None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        m = parser.add_argument_group("reliability detector")
        m.add_argument("--seed", type=int, default=0, help="seed of all randomness (default 0)")
        m.add_argument(
            "--threshold",
            type=float,
            default=0.995,
            help="score at which a record is flagged (a quantile among normal records; default 0.995)",
        )
        m.add_argument(
            "--confirm-s",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="the precision/recall knob: a score streak opens an incident only once it has "
            "lasted this many seconds of event time (short bursts never alert; every incident "
            "alerts that much later; missed heartbeats open at once). Default 0: at once",
        )
        m.add_argument(
            "--explained-only",
            action="store_true",
            help="the second precision knob, for DWCP fleets: open an incident only once a "
            "signature names its probable category (a score streak that no category explains "
            "never alerts; sources without the DWCP fields then never alert). Default: off",
        )
        m.add_argument(
            "--param",
            action="append",
            metavar="NAME=JSON",
            help="any other ReliabilityDetector hyper-parameter, e.g. --param span=720 "
            "(repeatable; --param background=false refits inline, the default for files; "
            f"background refits are installed --param forest_swap_after={SWAP_AFTER} learned "
            "records after they start, null: when ready)",
        )
        m.add_argument(
            "--refit-in",
            choices=("process", "thread"),
            default="process",
            help="where background IsolationForest refits run: a worker process (default; never "
            "competes with scoring for the GIL) or a thread",
        )
        o = parser.add_argument_group("reliability scores and evaluation")
        o.add_argument(
            "--scores-output",
            metavar="FILE",
            help="one score per scored record, in order: .csv or JSON lines ('-' = stdout), "
            "with each component's calibrated score (hst, forest, deviation, trend, residual)",
        )
        o.add_argument(
            "--labels", metavar="FILE", help="ground-truth labels (JSON lines) to evaluate against"
        )
        o.add_argument("--report-dir", help="with --labels: write <name>.json and <name>.md here")
        o.add_argument("--report-name", help="file stem of the report (default: the input's)")
        o.add_argument(
            "--warmup-s",
            type=float,
            default=900.0,
            help="evaluation ignores the first seconds of event time (default 900)",
        )
        o.add_argument(
            "--post-s",
            type=float,
            default=60.0,
            help="seconds after a label's end that count neither as incident nor normal (default 60)",
        )

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Score the batch; return its alerts as outputs."""
        return self.handle_shard(0, batch)

    def handle_shard(self, shard: int, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Score one shard's records with its detector; return their alerts as outputs."""
        one = self.shards[shard]
        recs = [rec for _, rec in batch]
        scored, alerts = one.detector.process(recs)
        self.alerts += len(alerts)
        if self.keep or self.scores.f is not None:
            for rec, sc in zip(recs, scored, strict=True):
                if self.keep:
                    one.flags.append(RecordFlag(rec.node_id, rec.timestamp, sc.flagged))
                self.scores.write(rec.node_id, rec.timestamp, sc.score, sc.flagged, "", sc)
            if self.keep:
                one.alerts_seen += alerts
        return [Output(self.topic, a.node_id.encode(), encode(a)) for a in alerts]

    def learn(self, batch: list[tuple[Message, Any]]) -> None:
        """History (``--learn-from``): learned, not scored into the evaluation or the scores
        file, and its alerts dropped."""
        self.detector.process([rec for _, rec in batch])

    def end_learning(self) -> None:
        self.detector.end_history()

    def state(self, final: bool = False) -> Any:
        """``{"detector": ..., "evaluation": (flags, alerts) or None}``."""
        return self.shard_state(0, final)

    def shard_state(self, shard: int, final: bool = False) -> Any:
        one = self.shards[shard]
        return {
            "detector": one.detector,
            "evaluation": (one.flags, one.alerts_seen) if self.keep else None,
        }

    def shard_version(self, shard: int) -> str:
        return str(self.shards[shard].detector.model_versions.get("iforest", ""))

    @property
    def model_version(self) -> str:
        """The IsolationForest's version (with shards: every distinct one, sorted)."""
        return ",".join(sorted({self.shard_version(k) for k in self.shards}))

    def _open_incidents(self) -> int:
        return sum(len(s.detector.tracker_.open_incidents()) for s in self.shards.values())

    def status(self) -> str:
        shards = f"  shards {len(self.shards)}" if len(self.shards) != 1 else ""
        return (
            f"reliability: alerts {self.alerts:,d}  open incidents "
            f"{self._open_incidents():,d}  {self.model_version}{shards}"
        )

    def observe(self, metrics: ProcessorMetrics) -> None:
        """Model version, open incidents and the IsolationForest refits' durations."""
        metrics.model_version(self.model_version)
        metrics.open_incidents(self._open_incidents())
        forests = [one.detector.forest_ for one in self.shards.values()]
        seconds = [x for f in forests for x in f.fit_seconds_]
        metrics.fits("iforest", sum(f.version_ for f in forests), lambda k: seconds[-k:])

    @property
    def flags(self) -> list[RecordFlag]:
        """What --labels evaluates, over every shard held now."""
        return [f for s in self.shards.values() for f in s.flags]

    @property
    def alerts_seen(self) -> list[Alert]:
        return [x for s in self.shards.values() for x in s.alerts_seen]

    def summary(self) -> dict[str, Any]:
        detectors = [s.detector for s in self.shards.values()]
        seen = sum(d.n_seen_ for d in detectors)
        out: dict[str, Any] = {"alerts": self.alerts, "records_seen": seen}
        out["forest_waited_s"] = round(sum(d.forest_.waited_s_ for d in detectors), 3)
        out["protect_overrides"] = sum(d.protect_overrides_ for d in detectors)
        out["protected_max"] = round(max((d.protected_max_ for d in detectors), default=0.0), 4)
        if len(self.shards) != 1 or 0 not in self.shards:
            out["shards"] = sorted(self.shards)
        if not self.args.labels:
            return out
        a = self.args
        labels = [
            decode(line, IncidentLabel)
            for line in Path(a.labels).read_bytes().splitlines()
            if line.strip()
        ]
        flags, alerts = self.flags, self.alerts_seen
        first = min((f.event_time for f in flags), default=None)
        warm = first + dt.timedelta(seconds=a.warmup_s) if first else None
        ev = evaluate(
            labels, alerts=alerts, records=flags, warmup_until=warm, post_s=a.post_s
        )
        source = a.from_file or "the telemetry topic"
        ev.config.update(
            {
                "file": source,
                "seed": a.seed,
                # the detectors' own: a restored detector keeps the threshold it was saved with
                "threshold": _one_or_all([d.threshold for d in detectors], a.threshold),
                "warmup_s": a.warmup_s,
                "records": len(flags),
            }
        )
        out["evaluation"] = ev.to_dict()
        out["incident_ids"] = sorted({x.incident_id for x in alerts if x.status == "open"})
        title = f"Reliability detector on {Path(source).name}"
        print(ev.to_markdown(title), file=sys.stderr)
        if a.report_dir:
            d = Path(a.report_dir)
            d.mkdir(parents=True, exist_ok=True)
            stem = a.report_name or Path(source).stem
            (d / f"{stem}.json").write_text(ev.to_json() + "\n")
            (d / f"{stem}.md").write_text(ev.to_markdown(title))
        return out

    def close(self) -> None:
        self.scores.close()
        for one in self.shards.values():
            one.detector.forest_.set_executor(None)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


class _Shard:
    """One shard's detector and, with ``--labels``, its records' flags and alerts."""

    def __init__(self, detector: ReliabilityDetector) -> None:
        self.detector = detector
        self.flags: list[RecordFlag] = []
        self.alerts_seen: list[Alert] = []


def refit_pool(mode: str) -> Executor | None:
    """Where background IsolationForest refits run: ``process`` (default) is a one-worker
    process pool (:func:`stream.workers.pool`: a clean ``spawn`` interpreter, so a refit never
    holds the consumer's GIL, at a lower CPU priority, ``nice`` +10, so on a busy machine the
    scheduler prefers the consumer, and dying with the consumer, even after a kill -9);
    ``thread``: ``None`` (the forest's own worker thread)."""
    if mode == "thread":
        return None
    pool = workers.pool(max_workers=1, nice=REFIT_NICE)
    pool.submit(warm_fit)  # the worker's start and imports now, not when the first refit is due
    return pool


SWAP_AFTER = 5000
"""Learned records between the start of a background IsolationForest refit and its swap: a fit
(4,096 rows, 100 trees) takes about 0.3 s in the worker, this many records about a second at
the consumer's rate, so the loop seldom waits (the summary's ``forest_waited_s``)."""


def detector_params(args: argparse.Namespace, background: bool = False) -> dict[str, Any]:
    """Detector hyper-parameters from the command line."""
    params: dict[str, Any] = {
        "seed": args.seed,
        "threshold": args.threshold,
        "background": background,
        "confirm_s": args.confirm_s,
        "explained_only": args.explained_only,
    }
    for item in args.param or ():
        name, sep, raw = item.partition("=")
        if not sep:
            raise DwcpError(f"bad --param {item!r}: want NAME=VALUE")
        try:
            params[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise DwcpError(
                f"bad --param {item!r}: VALUE must be JSON (a number, true, {{...}})"
            ) from None
    return params


def _one_or_all(values: list[float], default: float) -> float | list[float]:
    """The value all of ``values`` share, else all the distinct ones (``default`` if none)."""
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else (distinct or default)


#: The detector's components, each calibrated to a quantile among normal records, written
#: beside the score by ``--scores-output`` (which of them found a record rare).
COMPONENTS = DETECTORS


class _ScoreWriter:
    """One line per input record: CSV (``.csv``) or JSON lines; ``None`` path: nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.f: Any = None
        self.csv: Any = None
        if path and path != "-":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.f = open(path, "w", newline="")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise DwcpError(f"cannot write the scores to {path}: {exc}") from exc
        elif path == "-":
            self.f = sys.stdout
        if path and path.endswith(".csv"):
            self.csv = csv.writer(self.f)
            self.csv.writerow(["node_id", "timestamp", "score", "flagged", "error", *COMPONENTS])

    def write(
        self, node: Any, ts: Any, score: Any, flagged: bool, error: str, parts: Any = None
    ) -> None:
        """One line; ``parts`` (a :class:`RecordScore`) adds each component's calibrated score
        (which detector saw the record as rare: :data:`COMPONENTS`)."""
        if self.f is None:
            return
        t = ts.isoformat() if ts is not None else ""
        s = f"{score:.6f}" if isinstance(score, float) else ""
        comp = [f"{getattr(parts, c):.6f}" for c in COMPONENTS] if parts is not None else []
        if self.csv is not None:
            self.csv.writerow([node or "", t, s, int(flagged), error, *comp])
        else:
            row: dict[str, Any] = {
                "node_id": node,
                "timestamp": t or None,
                "score": float(s) if s else None,
                "flagged": flagged,
            }
            if comp:
                row["components"] = {c: float(v) for c, v in zip(COMPONENTS, comp, strict=True)}
            if error:
                row["error"] = error
            self.f.write(orjson.dumps(row).decode() + "\n")

    def close(self) -> None:
        if self.f is not None and self.f is not sys.stdout:
            self.f.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.reliability`` command line."""
    return app.build_parser([ReliabilityProcessor], "python -m consumers.reliability")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.reliability``."""
    return app.main([ReliabilityProcessor], argv, "python -m consumers.reliability")


if __name__ == "__main__":
    sys.exit(main())
