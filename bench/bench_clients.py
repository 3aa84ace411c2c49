"""Benchmark the two Kafka client backends on realistic telemetry (not a test).

For each backend, each round: produce N ~600-byte telemetry JSON records keyed by node_id
into a fresh topic (``produce``: pre-encoded records, the client's limit), run the synthetic
fleet producer for the same N records into another topic (``synthetic``: simulate + encode +
produce, what ``python -m producers.synthetic --rate 0`` does), then read the first topic back
three times with fresh consumer groups:

* ``raw``: ``poll_batch`` + touch each value (the limit any consumer can reach),
* ``validate``: ``poll_batch`` + ``validate_telemetry`` on each value (decode + checks),
* ``loop``: the full :class:`stream.loop.BatchLoop` (validate, flush, commit per batch).

Prints the median of each rate over the rounds, the validation overhead (``validate`` time
over ``raw`` time, minus 1; the target is at most 25%) and the confluent/kafka-python ratios.
Starts nothing: it expects the broker running (``bash scripts/kafka-local.sh start``).

Usage::

    python bench/bench_clients.py [--rounds 5] [--records-confluent 200000]
                                  [--records-kafka-python 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from producers.config import FleetConfig  # noqa: E402
from producers.runner import Limits, run  # noqa: E402
from producers.sinks import KafkaSink  # noqa: E402
from stream.errors import DwcpError  # noqa: E402
from stream.kafka import make_admin, make_consumer, make_producer  # noqa: E402
from stream.loop import BatchLoop  # noqa: E402
from stream.schema import FIELDS  # noqa: E402
from stream.settings import BACKENDS, Settings  # noqa: E402
from stream.validation import validate_telemetry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "clients.json"
METRICS = ("produce", "synthetic", "raw", "validate", "loop")


def make_records(n: int, nodes: int = 500, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) telemetry records, every schema field present, ~600 bytes each."""
    rng = random.Random(seed)
    t0 = 1_767_607_200  # 2026-01-05T10:00:00Z
    out = []
    for i in range(n):
        node = f"n-{i % nodes:04d}"
        rec: dict[str, Any] = {}
        for f in FIELDS:
            if f.kind == "time":
                s = t0 + i // nodes
                rec[f.name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
            elif f.name == "node_id":
                rec[f.name] = node
            elif f.kind == "str":
                rec[f.name] = f"{f.name[:4]}-{rng.randrange(20):02d}"
            elif f.kind == "enum":
                rec[f.name] = rng.choice(f.choices)
            elif f.kind == "int":
                rec[f.name] = rng.randrange(int(min(f.max or 1e6, 1e6)) + 1)
            else:
                rec[f.name] = round(rng.uniform(f.min or 0.0, min(f.max or 100.0, 100.0)), 2)
        out.append((node.encode(), orjson.dumps(rec)))
    return out


def _consume(settings: Settings, topic: str, n: int, per_record: Callable[[bytes], Any]) -> float:
    """Records/s reading ``n`` records.

    Only polls that return records count towards the time (poll + per-record work): a poll
    that waits empty (group join, a fetch session reset) is broker scheduling, not client
    cost, and on the fast backend one such 0.5-1 s pause dominated a whole round.
    """
    consumer = make_consumer(
        settings, [topic], group_id=f"bench-{uuid.uuid4().hex}", from_beginning=True
    )
    try:
        seen, elapsed = 0, 0.0
        deadline = time.monotonic() + 600
        while seen < n and time.monotonic() < deadline:
            t0 = time.perf_counter()
            batch = consumer.poll_batch(settings.batch_size, 500)
            for m in batch:
                per_record(m.value)
            if batch:
                elapsed += time.perf_counter() - t0
            seen += len(batch)
    finally:
        consumer.close()
    if seen < n:
        raise RuntimeError(f"read only {seen} of {n} records from {topic}")
    return n / elapsed


def _loop(settings: Settings, topic: str, dlq: str, n: int) -> float:
    group = f"bench-{uuid.uuid4().hex}"
    consumer = make_consumer(settings, [topic], group_id=group, from_beginning=True)
    first = consumer.poll_batch(settings.batch_size, 30_000)  # join the group outside the timing
    loop = BatchLoop(
        consumer,
        make_producer(settings),
        None,
        dead_letter_topic=dlq,
        group_id=group,
        max_batch=settings.batch_size,
        max_records=n,
        idle_timeout=30,
    )
    start = time.perf_counter()
    loop.process_batch(first)
    stats = loop.run()
    elapsed = time.perf_counter() - start
    if stats.records_in < n or stats.dead_letters:
        raise RuntimeError(
            f"loop read {stats.records_in}/{n} records, {stats.dead_letters} dead letters"
        )
    return n / elapsed


def run_round(
    settings: Settings, records: Sequence[tuple[bytes, bytes]], partitions: int
) -> dict[str, float]:
    """One round for one backend: produce, then raw / validate / loop consume."""
    topic, dlq = f"bench-{uuid.uuid4().hex}", f"bench-dlq-{uuid.uuid4().hex}"
    fleet_topic, labels = f"bench-fleet-{uuid.uuid4().hex}", f"bench-labels-{uuid.uuid4().hex}"
    with make_admin(settings) as admin:
        admin.create_topics(
            {topic: partitions, dlq: 1, fleet_topic: partitions, labels: 1}, settings.replication_factor
        )
    try:
        with make_producer(settings) as producer:
            start = time.perf_counter()
            for key, value in records:
                producer.produce(topic, value, key)
            producer.flush()
            produce = len(records) / (time.perf_counter() - start)
        n = len(records)
        synthetic = _synthetic(settings, fleet_topic, labels, n)
        raw = _consume(settings, topic, n, len)
        validate = _consume(settings, topic, n, validate_telemetry)
        loop = _loop(settings, topic, dlq, n)
    finally:
        with make_admin(settings) as admin:
            admin.delete_topics([topic, dlq, fleet_topic, labels])
    return {"produce": produce, "synthetic": synthetic, "raw": raw, "validate": validate, "loop": loop}


def _synthetic(settings: Settings, topic: str, labels: str, n: int) -> float:
    """The synthetic fleet producer (50 nodes, default incidents) at full speed: events/s."""
    sink = KafkaSink(make_producer(settings), topic, labels)
    start = time.perf_counter()
    try:
        stats = run(FleetConfig(seed=1), sink, Limits(count=n), threading.Event())
        sink.flush()
    finally:
        sink.close()
    return stats.records / (time.perf_counter() - start)


def summarize(rounds: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per backend and metric, validation overhead and backend ratios."""
    med = {b: {m: statistics.median(r[m] for r in rs) for m in METRICS} for b, rs in rounds.items()}
    out: dict[str, Any] = {
        "median_events_per_s": med,
        "validate_overhead": {},
        "confluent_over_kafka_python": {},
    }
    for b, m in med.items():
        out["validate_overhead"][b] = m["raw"] / m["validate"] - 1  # extra time per record over raw
    if {"confluent", "kafka-python"} <= med.keys():
        out["confluent_over_kafka_python"] = {
            m: med["confluent"][m] / med["kafka-python"][m] for m in METRICS
        }
    return out


def print_table(
    summary: dict[str, Any], rounds: dict[str, list[dict[str, float]]], sizes: dict[str, int]
) -> None:
    med = summary["median_events_per_s"]
    print(
        f"\n{'backend':14s} {'records':>8s} {'rounds':>6s} "
        + " ".join(f"{m + ' ev/s':>14s}" for m in METRICS)
        + f" {'validate/raw':>13s}"
    )
    for b, m in med.items():
        over = summary["validate_overhead"][b]
        print(
            f"{b:14s} {sizes[b]:>8,d} {len(rounds[b]):>6d} "
            + " ".join(f"{m[k]:>14,.0f}" for k in METRICS)
            + f" {'+' if over >= 0 else ''}{over:>11.0%} {'(target <= +25%)' if over > 0.25 else 'ok'}"
        )
    ratio = summary["confluent_over_kafka_python"]
    if ratio:
        print(
            f"{'confluent/kp':14s} {'':>8s} {'':>6s} "
            + " ".join(f"{ratio[k]:>13.1f}x" for k in METRICS)
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/bench_clients.py",
        description="Producer and consumer throughput of the kafka-python and confluent backends on "
        "~600-byte telemetry records: produce, raw consume, consume+validate and the full batch loop. "
        "Prints medians over rounds and ratios. Needs a running broker: bash scripts/kafka-local.sh start",
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated (default both)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per backend (default 5)")
    parser.add_argument(
        "--records-confluent", type=int, default=200_000, help="records per round (default 200k)"
    )
    parser.add_argument(
        "--records-kafka-python", type=int, default=100_000, help="records per round (default 100k)"
    )
    parser.add_argument(
        "--partitions", type=int, default=6, help="partitions of the bench topic (default 6)"
    )
    parser.add_argument("--json", action="store_true", help=f"also write the results to {RESULTS}")
    Settings.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = Settings.from_args(args, os.environ)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sizes = {"confluent": args.records_confluent, "kafka-python": args.records_kafka_python}
    try:
        make_admin(base, timeout_s=5).close()
    except DwcpError as exc:
        print(
            f"error: {exc}\nstart the local broker first: bash scripts/kafka-local.sh start",
            file=sys.stderr,
        )
        return 1
    records = make_records(max(sizes[b] for b in backends))
    mean_size = statistics.fmean(len(v) for _, v in records)
    print(
        f"telemetry records: {mean_size:.0f} bytes on average, {len(set(k for k, _ in records))} node keys"
    )
    rounds: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
    for r in range(args.rounds):
        for b in backends:
            settings = Settings.from_args(args, os.environ, backend=b)
            res = run_round(settings, records[: sizes[b]], args.partitions)
            rounds[b].append(res)
            print(
                f"round {r + 1} {b:12s} " + "  ".join(f"{m} {v:,.0f}/s" for m, v in res.items()),
                flush=True,
            )
    summary = summarize(rounds)
    print_table(summary, rounds, sizes)
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": "python bench/bench_clients.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "record_bytes_mean": round(mean_size, 1),
            "records_per_round": {b: sizes[b] for b in backends},
            "partitions": args.partitions,
            "rounds": rounds,
            **summary,
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
        }
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
