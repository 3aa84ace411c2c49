"""Benchmark event-time alignment and scale-out on a 6-partition backlog (not a test).

Each round produces N telemetry records (keyed by node, 6 partitions) into a fresh topic and
reads the whole backlog back with :class:`stream.loop.BatchLoop` (validate, handle, flush,
commit) in fresh consumer groups, four ways:

* ``unaligned``: one process, ``aligner=None`` (each polled batch as it comes: the limit),
* ``aligned``: one process with the :class:`stream.alignment.Aligner` (the default),
* ``two``: two processes in one group, aligned, each with its share of the partitions,
* ``aligned+work``: one process, aligned, with a handler that spends ``--work-us`` of CPU
  per record (a model's cost); ``two+work``: the same in two processes.

Each run is timed between the moments its group has committed 10% and 90% of the N records
(steady state: process start, the group join and the tail are not counted; an aligned
backlog's last 15 s of event time are handed on only when the partitions go idle).
Prints the median records/s of each over the rounds and the ratios aligned/unaligned (the
cost of alignment) and two/one (scale-out, without and with per-record work; the issue's
target is >= 1.8 on a machine with the cores for it). Starts nothing: it expects the broker
(``bash scripts/kafka-local.sh start``).

Usage::

    python bench/bench_alignment.py [--rounds 3] [--records 200000] [--work-us 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from bench.bench_clients import make_records  # noqa: E402
from stream.alignment import Aligner  # noqa: E402
from stream.kafka import make_admin, make_producer  # noqa: E402
from stream.loop import run_consumer  # noqa: E402
from stream.settings import Settings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "alignment.json"
PARTITIONS = 6


def spin(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def consume(settings: Settings, topic: str, group: str, align: bool, work_us: float) -> int:
    """Read the topic in ``group`` until idle; returns the records this member handled."""

    def handler(batch: list[Any]) -> list[Any]:
        if work_us:
            for _ in batch:
                spin(work_us)
        return []

    stats = run_consumer(
        settings,
        [topic],
        handler,
        group_id=group,
        from_beginning=True,
        install_signals=False,
        poll_timeout_ms=200,
        idle_timeout=2,
        aligner=Aligner(max_queued=4 * settings.batch_size) if align else None,
    )
    return stats.records_in


def _member(settings: Settings, topic: str, group: str, align: bool, work_us: float) -> None:
    consume(settings, topic, group, align, work_us)


def timed_group(
    settings: Settings, topic: str, n: int, members: int, align: bool, work_us: float
) -> float:
    """Steady records/s of ``members`` processes in one group: between the moments the group
    has committed 10% and 90% of the ``n`` records (process start, the group join and the
    backlog's tail, which an aligned run hands on when its partitions go idle, are not
    counted); the run must still commit all ``n``."""
    group = f"bench-align-{uuid.uuid4().hex[:8]}"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_member, args=(settings, topic, group, align, work_us))
        for _ in range(members)
    ]
    for p in procs:
        p.start()
    first = last = done = None
    at_first = at_last = 0
    try:
        with make_admin(settings) as admin:
            while done is None:
                total = sum(admin.group_offsets(group, topic).values())
                now = time.perf_counter()
                if first is None and total >= n // 10:
                    first, at_first = now, total
                if last is None and total >= n * 9 // 10:
                    last, at_last = now, total
                if total >= n:
                    done = now
                elif not any(p.is_alive() for p in procs):
                    break
                time.sleep(0.02)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    if first is None or last is None or done is None or last <= first:
        raise RuntimeError(f"group {group} did not commit all {n:,d} records")
    return (at_last - at_first) / (last - first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--work-us", type=float, default=100.0, help="CPU per record in +work runs")
    ap.add_argument("--json", action="store_true", help=f"also write {RESULTS}")
    a = ap.parse_args(argv)
    settings = Settings.from_env(os.environ)
    records = make_records(a.records, nodes=600)
    rates: dict[str, list[float]] = {}
    for r in range(a.rounds):
        topic = f"bench-align-{uuid.uuid4().hex[:8]}"
        with make_admin(settings) as admin:
            admin.create_topics({topic: PARTITIONS}, replication_factor=1)
        with make_producer(settings) as p:
            for key, value in records:
                p.produce(topic, value, key)
            p.flush(120)
        runs = {
            "unaligned": (1, False, 0.0),
            "aligned": (1, True, 0.0),
            "two": (2, True, 0.0),
            "aligned+work": (1, True, a.work_us),
            "two+work": (2, True, a.work_us),
        }
        for name, (members, align, work) in runs.items():
            rate = timed_group(settings, topic, a.records, members, align, work)
            rates.setdefault(name, []).append(rate)
            print(f"round {r + 1}: {name:>13}: {rate:>10,.0f} records/s", file=sys.stderr)
        with make_admin(settings) as admin:
            admin.delete_topics([topic])
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {
        "aligned/unaligned": med["aligned"] / med["unaligned"],
        "two/one": med["two"] / med["aligned"],
        "two/one with work": med["two+work"] / med["aligned+work"],
    }
    print(f"\nmedian of {a.rounds} rounds, {a.records:,d} records, {PARTITIONS} partitions, "
          f"{os.cpu_count()} CPUs, backend {settings.backend}:")
    for k, v in med.items():
        print(f"  {k:>13}: {v:>10,.0f} records/s")
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}")
    if a.json:
        RESULTS.write_text(json.dumps({
            "records": a.records, "rounds": a.rounds, "work_us": a.work_us,
            "cpus": os.cpu_count(), "machine": platform.machine(), "backend": settings.backend,
            "median_records_per_s": med, "ratios": ratios, "all": rates,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
