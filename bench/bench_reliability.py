"""Benchmark the reliability detector (not a test).

Over the same synthetic records (``producers.synthetic``'s fleet, in memory), side by side:

* ``raw``: decoding the JSON values only (``decode_telemetry``) - the floor any consumer pays;
* ``bare_hst``: decode + a bare river ``HalfSpaceTrees`` loop (score + learn, min-max scaled
  raw metrics) - what the issue compares against;
* ``detector``: decode + :class:`models.reliability.ReliabilityDetector` with both detectors
  on (HST + background IsolationForest refits), in batches of ``--batch`` records.

With ``--kafka`` it also measures the raw consume rate from the local broker
(``poll_batch`` only, confluent backend). It prints records/s (median of ``--rounds``), the
ratios, the longest per-batch stall while a background refit runs against batches without
one, and resident memory before/after ``--memory-records`` records.

Usage::

    python bench/bench_reliability.py [--records 100000] [--rounds 3] [--memory-records 1000000] [--kafka]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from river.anomaly import HalfSpaceTrees  # noqa: E402
from river.preprocessing import MinMaxScaler  # noqa: E402

from models.reliability import ReliabilityDetector  # noqa: E402
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


def rss_mb() -> float:
    with open("/proc/self/status") as f:
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


def run_detector(
    values: list[bytes], batch: int, refit_every: int
) -> tuple[float, list[float], list[float]]:
    det = ReliabilityDetector(background=True, forest_refit_every=refit_every)
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
    rates: dict[str, list[float]] = {"raw": [], "bare_hst": [], "detector": []}
    during: list[float] = []
    quiet: list[float] = []
    for r in range(args.rounds):
        rates["raw"].append(run_raw(values))
        rates["bare_hst"].append(run_bare_hst(values))
        rate, d, q = run_detector(values, args.batch, args.refit_every)
        rates["detector"].append(rate)
        during += d
        quiet += q
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
    q_med = statistics.median(quiet) if quiet else 0.0
    out["batch_ms"] = {
        "median_without_refit": round(1000 * q_med, 2),
        "max_during_refit": round(1000 * max(during), 2) if during else None,
        "max_stall_vs_median": round(1000 * (max(during) - q_med), 2) if during else None,
        "batches_during_refit": len(during),
    }
    if args.memory_records:
        det = ReliabilityDetector(background=True)
        before = None
        chunk = values
        n = 0
        marks = []
        while n < args.memory_records:
            for i in range(0, len(chunk), args.batch):
                det.process([decode_telemetry(v) for v in chunk[i : i + args.batch]])
            n += len(chunk)
            if before is None:
                before = rss_mb()
            marks.append((n, round(rss_mb(), 1)))
        out["memory_mb"] = {"after_first_pass": before, "by_records": marks}
    print(json.dumps(out, indent=2))
    if args.json:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
