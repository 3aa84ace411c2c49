"""Benchmark the reliability detector (not a test).

Over the same synthetic records (``producers.synthetic``'s fleet, in memory), side by side:

* ``raw``: decoding the JSON values only (``decode_telemetry``) - the floor any consumer pays;
* ``bare_hst``: decode + a bare river ``HalfSpaceTrees`` loop (score + learn, min-max scaled
  raw metrics) - what the issue compares against;
* ``detector``: decode + :class:`models.reliability.ReliabilityDetector` with both detectors
  on (HST + background IsolationForest refits in a worker *process*, as the consumer runs
  them), in batches of ``--batch`` records;
* ``detector_thread``: the same with the refits in a worker *thread* (the stall it causes is
  what the process pool removes).

With ``--kafka`` it also measures the raw consume rate from the local broker
(``poll_batch`` only, confluent backend). It prints records/s (median of ``--rounds``), the
ratios, per refit mode the longest per-batch stall while a background refit runs (max batch
time during a refit minus the median batch time without one; also the p99 and max of the
batches without one, for scale), and resident memory (main process, and the refit worker)
every 50k records up to ``--memory-records`` *fresh* records (written once to
``.cache/bench/`` by ``producers.synthetic`` in a child process, so the generator's memory
does not count).

Usage::

    python bench/bench_reliability.py [--records 100000] [--rounds 3] [--memory-records 1000000] [--kafka]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
import numpy as np  # noqa: E402
from river.anomaly import HalfSpaceTrees  # noqa: E402
from river.preprocessing import MinMaxScaler  # noqa: E402

from consumers.reliability import refit_pool  # noqa: E402
from models.reliability import ReliabilityDetector  # noqa: E402
from models.reliability.forest import fit_forest  # noqa: E402
from producers.encode import RecordEncoder  # noqa: E402
from producers.fleet import Fleet, FleetConfig  # noqa: E402
from stream.schema import NUMERIC_FIELDS, decode_telemetry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"


def make_values(n: int, seed: int = 11) -> list[bytes]:
    fleet = Fleet(FleetConfig(nodes=50, seed=seed, interval_s=5.0, incident_rate=0.5))
    enc = RecordEncoder(fleet.topology)
    out: list[bytes] = []
    while len(out) < n:
        out += enc.encode(enc.records(fleet.step()))
    return out[:n]


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_raw(values: list[bytes]) -> float:
    t = time.perf_counter()
    for v in values:
        decode_telemetry(v)
    return len(values) / (time.perf_counter() - t)


def run_bare_hst(values: list[bytes]) -> float:
    scaler, hst = MinMaxScaler(), HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=0)
    t = time.perf_counter()
    for v in values:
        rec = decode_telemetry(v)
        x = {k: float(getattr(rec, k)) for k in NUMERIC_FIELDS if getattr(rec, k) is not None}
        x = scaler.learn_one(x) or scaler.transform_one(x)
        hst.score_one(x)
        hst.learn_one(x)
    return len(values) / (time.perf_counter() - t)


def warm_pool(pool: Executor) -> None:
    """Start the worker and import scikit-learn in it before anything is timed."""
    pool.submit(fit_forest, np.zeros((8, 2)), 0, 2, 8).result(60)


def run_detector(
    values: list[bytes], batch: int, refit_every: int, pool: Executor | None
) -> tuple[float, list[float], list[float]]:
    det = ReliabilityDetector(background=True, forest_refit_every=refit_every)
    det.forest_.set_executor(pool)
    during, quiet = [], []
    t = time.perf_counter()
    for i in range(0, len(values), batch):
        refitting = det.forest_.refitting
        b0 = time.perf_counter()
        det.process([decode_telemetry(v) for v in values[i : i + batch]])
        (during if refitting or det.forest_.refitting else quiet).append(time.perf_counter() - b0)
    rate = len(values) / (time.perf_counter() - t)
    det.forest_.wait(30)
    return rate, during, quiet


def run_kafka(values: list[bytes]) -> float:
    from stream.kafka import make_admin, make_consumer, make_producer
    from stream.settings import Settings

    s = Settings(backend="confluent", topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.")
    topic = s.topic("telemetry")
    with make_admin(s) as admin:
        admin.create_topics({topic: 1}, replication_factor=1)
    with make_producer(s) as p:
        for v in values:
            p.produce(topic, v, b"k")
        p.flush(60)
    c = make_consumer(s, [topic], group_id=f"bench-{uuid.uuid4().hex}", from_beginning=True)
    n, t = 0, None
    try:
        while n < len(values):
            got = c.poll_batch(5000, 500)
            t = t or time.perf_counter()
            n += len(got)
    finally:
        c.close()
        with make_admin(s) as admin:
            admin.delete_topics([topic])
    return n / (time.perf_counter() - (t or time.perf_counter()))


def stall_stats(during: list[float], quiet: list[float]) -> dict[str, object]:
    q_med = statistics.median(quiet) if quiet else 0.0
    q = sorted(quiet)
    d = sorted(during)
    return {
        "median_without_refit": round(1000 * q_med, 2),
        "median_during_refit": round(1000 * statistics.median(d), 2) if d else None,
        "p90_without_refit": round(1000 * q[int(0.9 * (len(q) - 1))], 2) if q else None,
        "p90_during_refit": round(1000 * d[int(0.9 * (len(d) - 1))], 2) if d else None,
        "p99_without_refit": round(1000 * q[int(0.99 * (len(q) - 1))], 2) if q else None,
        "max_without_refit": round(1000 * q[-1], 2) if q else None,
        "max_during_refit": round(1000 * max(during), 2) if during else None,
        "max_stall_vs_median": round(1000 * (max(during) - q_med), 2) if during else None,
        "batches_during_refit": len(during),
        "batches_without_refit": len(quiet),
    }


def memory_file(n: int, seed: int = 12) -> Path:
    """``n`` fresh records (event time moves on, so the detector keeps learning, refitting and
    tracking incidents as on a live stream) written once by ``producers.synthetic`` in a
    *child* process: the generator's own memory must not count as the detector's."""
    path = Path(".cache/bench") / f"reliability-memory-{n}-s{seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, "-m", "producers.synthetic", "--output", str(tmp), "--rate", "0",
             "--nodes", "50", "--interval", "5", "--count", str(n), "--seed", str(seed),
             "--incident-rate", "0.5"],
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        tmp.rename(path)
        tmp.with_suffix(".tmp.labels.jsonl").unlink(missing_ok=True)  # labels: not needed
    return path


def file_chunks(path: Path, chunk: int) -> Iterator[list[bytes]]:
    buf: list[bytes] = []
    with open(path, "rb") as f:
        for line in f:
            buf.append(line)
            if len(buf) == chunk:
                yield buf
                buf = []
    if buf:
        yield buf


def run_memory(batch: int, total: int, pool: Executor | None, every: int = 50_000) -> dict:
    det = ReliabilityDetector(background=True)
    det.forest_.set_executor(pool)
    worker = None
    n, marks = 0, []
    for chunk in file_chunks(memory_file(total), every):
        for i in range(0, len(chunk), batch):
            det.process([decode_telemetry(v) for v in chunk[i : i + batch]])
        n += len(chunk)
        procs = getattr(pool, "_processes", None) or {}
        worker = next(iter(procs), worker)
        marks.append([n, round(rss_mb(), 1), round(rss_mb(worker), 1) if worker else None])
    det.forest_.wait(30)
    return {
        "columns": ["records", "main_rss_mb", "refit_worker_rss_mb"],
        "by_records": marks,
        "growth_from_100k_mb": round(marks[-1][1] - marks[min(1, len(marks) - 1)][1], 1),
        "forest_refits": det.forest_.version_,
        "refit_errors": det.forest_.refit_errors_,
        "nodes_tracked": len(det.context_.node_index_),
        "open_incidents": len(det.tracker_.open_incidents()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--refit-every", type=int, default=20_000)
    ap.add_argument(
        "--memory-records", type=int, default=0, help="also run this many records and report memory"
    )
    ap.add_argument(
        "--kafka", action="store_true", help="also measure the raw consume rate (local broker)"
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help=f"also write {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}",
    )
    args = ap.parse_args(argv)
    values = make_values(args.records)
    pool = refit_pool("process")
    assert pool is not None
    warm_pool(pool)
    rates: dict[str, list[float]] = {
        "raw": [],
        "bare_hst": [],
        "detector": [],
        "detector_thread": [],
    }
    batches: dict[str, tuple[list[float], list[float]]] = {
        "process": ([], []),
        "thread": ([], []),
    }
    for r in range(args.rounds):
        rates["raw"].append(run_raw(values))
        rates["bare_hst"].append(run_bare_hst(values))
        for mode, key, ex in (("process", "detector", pool), ("thread", "detector_thread", None)):
            rate, d, q = run_detector(values, args.batch, args.refit_every, ex)
            rates[key].append(rate)
            batches[mode][0].extend(d)
            batches[mode][1].extend(q)
        print(
            f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()),
            file=sys.stderr,
        )
    med = {k: statistics.median(v) for k, v in rates.items()}
    if args.kafka:
        med["kafka_consume"] = run_kafka(values)
    out: dict[str, object] = {
        "records": args.records,
        "rounds": args.rounds,
        "batch": args.batch,
        "refit_every": args.refit_every,
        "cpus": len(os.sched_getaffinity(0)),
        "rec_per_s": {k: round(v) for k, v in med.items()},
    }
    out["ratios"] = {
        "detector/bare_hst": round(med["detector"] / med["bare_hst"], 3),
        "detector/raw_decode": round(med["detector"] / med["raw"], 3),
        **(
            {"detector/kafka_consume": round(med["detector"] / med["kafka_consume"], 3)}
            if "kafka_consume" in med
            else {}
        ),
    }
    out["batch_ms"] = {mode: stall_stats(d, q) for mode, (d, q) in batches.items()}
    if args.memory_records:
        out["memory"] = run_memory(args.batch, args.memory_records, pool)
    pool.shutdown()
    print(json.dumps(out, indent=2))
    if args.json:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
