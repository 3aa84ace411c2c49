"""``python -m consumers.reliability``: score telemetry, publish incident alerts.

On the stream, a consumer-group member reads the telemetry topic with the shared batch loop
(:mod:`stream.loop`: bad records go to the dead-letter topic, offsets are committed only after
the batch's alerts are flushed), scores every record with
:class:`models.reliability.ReliabilityDetector` (river Half-Space Trees + an IsolationForest
refit in the background, in a worker process by default: ``--refit-in``) and publishes alerts (open -> update -> resolved, stable incident
ids) on the alerts topic, keyed by node. The detector is checkpointed every
``--checkpoint-interval`` seconds, on partition revocation and on shutdown, under
``<state-dir>/reliability-<group>/``, and restored on start.

Offline, ``--from-file`` scores a recorded file through the same detector: JSON lines from
``producers.synthetic --output`` or a CSV (``--column-map`` maps its columns onto schema
fields; a file may carry only a few metrics). It writes one score in [0, 1] per input record,
in input order (``--output``, CSV or JSON lines), optionally the alerts, and with
``--labels`` an evaluation report (JSON + Markdown, :mod:`models.evaluation`). Offline the
forest refits inline at deterministic record counts (no worker), so a file scores the same
every time for a given ``--seed``.

Examples::

    python -m consumers.reliability --from-beginning
    python -m consumers.reliability --from-file .cache/rel/s2.jsonl --output .cache/rel/s2.scores.csv \\
        --labels .cache/rel/s2.labels.jsonl --report-dir reports/reliability
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import orjson

from models.evaluation import RecordFlag, evaluate
from models.reliability import ReliabilityDetector
from stream.checkpoint import CheckpointStore
from stream.errors import DwcpError
from stream.files import open_recording
from stream.kafka import Message, TopicPartition
from stream.loop import LoopStats, Output, run_consumer
from stream.records import Alert, IncidentLabel, decode, encode
from stream.schema import FIELD_BY_NAME, decode_telemetry
from stream.settings import Settings

log = logging.getLogger("consumers.reliability")
REFIT_NICE = 10
CHECKPOINT_FORMAT = 2  # 2: the node trend state (format-1 checkpoints start fresh)


# -- the stream ---------------------------------------------------------------------------------
class ReliabilityService:
    """Loop handler + checkpoint hooks around one detector (no Kafka client of its own).

    The watermark handed to the detector is the smallest of the partitions' latest event
    times (partitions more than ``lag_s`` behind the newest are ignored as idle), so a slow
    partition does not make its nodes look silent.
    """

    def __init__(
        self,
        detector: ReliabilityDetector,
        alerts_topic: str,
        store: CheckpointStore | None = None,
        checkpoint_interval_s: float = 60.0,
        lag_s: float = 60.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.detector = detector
        self.alerts_topic = alerts_topic
        self.store = store
        self.checkpoint_interval_s = checkpoint_interval_s
        self.lag_s = lag_s
        self.clock = clock
        self.latest: dict[TopicPartition, dt.datetime] = {}
        self.last_checkpoint = clock()
        self.alerts = 0
        self.records = 0

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Loop handler: score the batch, return its alerts as outputs."""
        # State now reflects the previous batches only, all committed: a safe checkpoint.
        if self.store and self.clock() - self.last_checkpoint >= self.checkpoint_interval_s:
            self.checkpoint("periodic")
        latest = self.latest
        for msg, rec in batch:
            tp = msg.topic_partition
            if tp not in latest or rec.timestamp > latest[tp]:
                latest[tp] = rec.timestamp
        _, alerts = self.detector.process([rec for _, rec in batch], self.watermark())
        self.records += len(batch)
        self.alerts += len(alerts)
        return [Output(self.alerts_topic, a.node_id.encode(), encode(a)) for a in alerts]

    def watermark(self) -> dt.datetime | None:
        """Smallest latest event time over the partitions that are not idle."""
        if not self.latest:
            return None
        top = max(self.latest.values())
        live = [t for t in self.latest.values() if (top - t).total_seconds() <= self.lag_s]
        return min(live)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint before partitions go (their offsets are committed by now)."""
        for tp in partitions:
            self.latest.pop(tp, None)
        self.checkpoint("revoke")

    def checkpoint(self, why: str) -> int | None:
        """Save the detector; returns the checkpoint version."""
        self.last_checkpoint = self.clock()
        if self.store is None:
            return None
        version = self.store.save(
            {"format": CHECKPOINT_FORMAT, "detector": self.detector},
            meta={
                "why": why,
                "records_seen": self.detector.n_seen_,
                **self.detector.model_versions,
            },
        )
        log.info("checkpoint v%d (%s) after %d records", version, why, self.detector.n_seen_)
        return version


def load_detector(store: CheckpointStore | None, **params: Any) -> tuple[ReliabilityDetector, str]:
    """The checkpointed detector if there is one, else a new one from ``params``."""
    found = store.load() if store else None
    if found is not None:
        state, meta = found
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            return (
                state["detector"],
                f"restored checkpoint v{meta['version']} ({meta.get('records_seen', 0):,} records seen)",
            )
        log.warning("checkpoint v%s has an unknown format; starting fresh", meta.get("version"))
    return ReliabilityDetector(**params), "no checkpoint: starting fresh"


def run_stream(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> tuple[LoopStats, ReliabilityService]:
    """Run the consumer until a limit or a signal stops it."""
    out = out or sys.stderr
    group = settings.consumer_group("reliability")
    store = (
        None
        if args.no_checkpoint
        else CheckpointStore(settings.state_dir, f"reliability-{group}", expect=dict)
    )
    detector, how = load_detector(store, **detector_params(args, background=True))
    print(f"reliability: {how}", file=out, flush=True)
    pool = refit_pool(args.refit_in) if detector.forest_.background else None
    detector.forest_.set_executor(pool)
    svc = ReliabilityService(detector, settings.topic("alerts"), store, args.checkpoint_interval)

    def progress(stats: LoopStats) -> None:
        print(
            f"reliability: {stats.records_in:>10,d} records  {stats.window_rate:>8,.0f} rec/s  "
            f"alerts {svc.alerts:,d}  dead letters {stats.dead_letters:,d}  open incidents "
            f"{len(detector.tracker_.open_incidents()):,d}  {detector.model_versions['iforest']}",
            file=out,
            flush=True,
        )

    try:
        stats = _consume(settings, args, svc, group, progress)
    finally:
        detector.forest_.set_executor(None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return stats, svc


def refit_pool(mode: str) -> Executor | None:
    """Where background IsolationForest refits run: ``process`` (default) is a one-worker
    process pool from a ``forkserver`` context (a clean interpreter: no Kafka client or
    threads inherited), so a refit never holds the consumer's GIL, and at a lower CPU
    priority (``nice`` +10), so on a busy machine the scheduler prefers the consumer;
    ``thread``: ``None`` (the forest's own worker thread)."""
    if mode == "thread":
        return None
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    return ProcessPoolExecutor(
        max_workers=1, mp_context=ctx, initializer=os.nice, initargs=(REFIT_NICE,)
    )


def _consume(
    settings: Settings,
    args: argparse.Namespace,
    svc: ReliabilityService,
    group: str,
    progress: Any,
) -> LoopStats:
    return run_consumer(
        settings,
        [settings.topic("telemetry")],
        svc.handle,
        group_id=group,
        from_beginning=args.from_beginning,
        on_revoke=svc.on_revoke,
        on_close=lambda: svc.checkpoint("shutdown"),
        max_records=args.max_records,
        max_seconds=args.max_seconds,
        idle_timeout=args.idle_timeout,
        progress_interval=args.interval,
        on_progress=progress,
    )


# -- offline scoring ----------------------------------------------------------------------------
def detector_params(args: argparse.Namespace, background: bool = False) -> dict[str, Any]:
    """Detector hyper-parameters from the command line."""
    params: dict[str, Any] = {
        "seed": args.seed,
        "threshold": args.threshold,
        "background": background,
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


def parse_column_map(spec: str | None) -> dict[str, str]:
    """``"csvcol=field,other=field2"`` -> ``{csvcol: field}`` (fields must be schema fields)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        col, sep, name = part.partition("=")
        if not sep or name not in FIELD_BY_NAME:
            raise DwcpError(f"bad --column-map entry {part!r}: want CSV_COLUMN=schema_field")
        out[col] = name
    return out


def read_records(
    path: str, column_map: dict[str, str], node_id: str, interval_s: float
) -> Iterator[tuple[Any, str]]:
    """``(record or None, error)`` per input record, in order (JSON lines or CSV, ``.gz`` too)."""
    if path.removesuffix(".gz").endswith(".csv"):
        yield from _read_csv(path, column_map, node_id, interval_s)
        return
    with open_recording(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield decode_telemetry(line), ""
            except Exception as exc:
                yield None, f"{type(exc).__name__}: {exc}"


def _read_csv(
    path: str, column_map: dict[str, str], node_id: str, interval_s: float
) -> Iterator[tuple[Any, str]]:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with io.TextIOWrapper(open_recording(path), newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            rec: dict[str, Any] = {}
            try:
                for col, raw in row.items():
                    name = column_map.get(col, col)
                    spec = FIELD_BY_NAME.get(name)
                    if spec is None or raw in (None, ""):
                        continue
                    if spec.kind == "time":
                        ts = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
                        rec[name] = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
                    elif spec.numeric:
                        rec[name] = float(raw)
                    else:
                        rec[name] = raw
            except ValueError as exc:
                yield None, f"row {i + 1}: {exc}"
                continue
            rec.setdefault("node_id", node_id)
            rec.setdefault("timestamp", t0 + dt.timedelta(seconds=i * interval_s))
            yield rec, ""


def score_file(args: argparse.Namespace, out: TextIO | None = None) -> dict[str, Any]:
    """Score ``args.from_file``; write scores, alerts and the evaluation; return a summary."""
    out = out or sys.stderr
    detector = ReliabilityDetector(**detector_params(args))
    records = read_records(
        args.from_file, parse_column_map(args.column_map), args.node_id, args.csv_interval
    )
    flags: list[RecordFlag] = []
    alerts: list[Alert] = []
    sink = _ScoreWriter(args.output)
    n = bad = 0
    t0 = time.perf_counter()
    batch: list[tuple[Any, str]] = []

    def run(batch: list[tuple[Any, str]]) -> None:
        good = [r for r, _ in batch if r is not None]
        scored, new_alerts = detector.process(good)
        alerts.extend(new_alerts)
        it = iter(scored)
        for rec, err in batch:
            if rec is None:
                sink.write(None, None, "", False, err)
                continue
            s = next(it)
            node, ts = _field(rec, "node_id"), _field(rec, "timestamp")
            flags.append(RecordFlag(node, ts, s.flagged))
            sink.write(node, ts, s.score, s.flagged, "")

    for item in records:
        n += 1
        bad += item[0] is None
        batch.append(item)
        if len(batch) >= args.batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    alerts += detector.flush()
    sink.close()
    secs = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "records": n,
        "bad_records": bad,
        "alerts": len(alerts),
        "seconds": round(secs, 1),
    }
    print(
        f"reliability: scored {n:,d} records ({bad:,d} unreadable) in {secs:.1f}s "
        f"({n / max(secs, 1e-9):,.0f} rec/s); {len(alerts):,d} alerts",
        file=out,
    )
    if args.alerts_output:
        Path(args.alerts_output).write_bytes(b"".join(encode(a) + b"\n" for a in alerts))
    if args.labels:
        labels = [
            decode(line, IncidentLabel)
            for line in Path(args.labels).read_bytes().splitlines()
            if line.strip()
        ]
        first = min((f.event_time for f in flags), default=None)
        warm = first + dt.timedelta(seconds=args.warmup_s) if first else None
        ev = evaluate(labels, alerts=alerts, records=flags, warmup_until=warm, post_s=args.post_s)
        ev.config.update(
            {
                "file": args.from_file,
                "seed": args.seed,
                "threshold": args.threshold,
                "warmup_s": args.warmup_s,
                "records": n,
            }
        )
        summary["evaluation"] = ev.to_dict()
        print(ev.to_markdown(f"Reliability detector on {Path(args.from_file).name}"), file=out)
        if args.report_dir:
            d = Path(args.report_dir)
            d.mkdir(parents=True, exist_ok=True)
            stem = args.report_name or Path(args.from_file).stem
            (d / f"{stem}.json").write_text(ev.to_json() + "\n")
            (d / f"{stem}.md").write_text(
                ev.to_markdown(f"Reliability detector on {Path(args.from_file).name}")
            )
    return summary


def _field(rec: Any, name: str) -> Any:
    return rec.get(name) if isinstance(rec, dict) else getattr(rec, name, None)


class _ScoreWriter:
    """One line per input record: CSV (``.csv``) or JSON lines; ``None`` path: nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.f: Any = None
        self.csv: Any = None
        if path:
            self.f = sys.stdout if path == "-" else open(path, "w", newline="")  # noqa: SIM115
            if path.endswith(".csv"):
                self.csv = csv.writer(self.f)
                self.csv.writerow(["node_id", "timestamp", "score", "flagged", "error"])

    def write(self, node: Any, ts: Any, score: Any, flagged: bool, error: str) -> None:
        if self.f is None:
            return
        t = ts.isoformat() if ts is not None else ""
        s = f"{score:.6f}" if isinstance(score, float) else ""
        if self.csv is not None:
            self.csv.writerow([node or "", t, s, int(flagged), error])
        else:
            row = {
                "node_id": node,
                "timestamp": t or None,
                "score": float(s) if s else None,
                "flagged": flagged,
            }
            if error:
                row["error"] = error
            self.f.write(orjson.dumps(row).decode() + "\n")

    def close(self) -> None:
        if self.f is not None and self.f is not sys.stdout:
            self.f.close()


# -- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.reliability`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.reliability",
        description="Score every telemetry record with river Half-Space Trees and a background-refit "
        "IsolationForest (per-node context features, calibrated and combined), publish incident "
        "alerts with a lifecycle on the alerts topic, checkpoint the detector. With --from-file, "
        "score a recorded file offline instead (no Kafka).",
    )
    m = p.add_argument_group("detector")
    m.add_argument("--seed", type=int, default=0, help="seed of all randomness (default 0)")
    m.add_argument(
        "--threshold",
        type=float,
        default=0.995,
        help="score at which a record is flagged (a quantile among normal records; default 0.995)",
    )
    m.add_argument(
        "--param",
        action="append",
        metavar="NAME=JSON",
        help="any other ReliabilityDetector hyper-parameter, e.g. --param span=720 (repeatable)",
    )
    s = p.add_argument_group("stream")
    s.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest record when the group has no committed offset",
    )
    s.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    s.add_argument("--max-records", type=int, help="stop after this many records")
    s.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without records"
    )
    s.add_argument(
        "--interval", type=float, default=5.0, help="seconds between stats lines (default 5)"
    )
    s.add_argument(
        "--batch-size",
        type=int,
        help="records per poll (DWCP_BATCH_SIZE); offline: records per batch (default 1000)",
    )
    s.add_argument(
        "--checkpoint-interval",
        type=float,
        default=60.0,
        help="seconds between periodic checkpoints (default 60)",
    )
    s.add_argument(
        "--refit-in",
        choices=("process", "thread"),
        default="process",
        help="where background IsolationForest refits run: a worker process (default; never "
        "competes with scoring for the GIL) or a thread",
    )
    s.add_argument("--state-dir", help="checkpoint folder (DWCP_STATE_DIR, default .cache/state)")
    s.add_argument(
        "--no-checkpoint", action="store_true", help="neither restore nor save checkpoints"
    )
    o = p.add_argument_group("offline scoring")
    o.add_argument(
        "--from-file",
        metavar="FILE",
        help="score this JSONL (producers.synthetic --output) or CSV file instead of the topic",
    )
    o.add_argument(
        "--output",
        metavar="FILE",
        help="scores, one per input record in order: .csv or JSON lines ('-' = stdout)",
    )
    o.add_argument("--alerts-output", metavar="FILE", help="write the alerts as JSON lines")
    o.add_argument("--column-map", help="CSV columns onto schema fields: 'col=field,col2=field2'")
    o.add_argument("--node-id", default="node", help="node_id for CSV rows without one")
    o.add_argument(
        "--csv-interval",
        type=float,
        default=1.0,
        help="seconds between CSV rows without a timestamp",
    )
    o.add_argument(
        "--labels", metavar="FILE", help="ground-truth labels (JSON lines) to evaluate against"
    )
    o.add_argument("--report-dir", help="write the evaluation as <name>.json and <name>.md here")
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
    Settings.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        if args.from_file:
            args.batch_size = args.batch_size or 1000
            score_file(args)
            return 0
        stats, svc = run_stream(settings, args)
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"reliability: stopped ({stats.stop_reason}) after {stats.records_in:,d} records, "
        f"{svc.alerts:,d} alerts, {stats.dead_letters:,d} dead letters",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
