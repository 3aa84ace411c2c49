"""Benchmark the reliability detector's cost per record by batch size (not a test).

A live consumer hands the detector what a poll brought, often a few records; a file, 5,000 at
a time. What a call costs beside its rows (numpy set-up, a loop over trees, dispatch) weighs on
the small batches only. The bench fleet of ``bench/bench_capacity.py`` (20 nodes x 4 links,
5 s, seed 3) is decoded in memory; for each batch size a fresh detector learns ``--warm``
records in batches of 5,000, then the next ``--records`` are timed in batches of that size.
Prints microseconds per record (median of ``--rounds``), the context's (``NodeContext``)
beside the whole detector's.

Usage::

    python bench/bench_batches.py [--sizes 10,50,200,1000,5000] [--warm 20000] [--records 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from models.reliability import NodeContext, ReliabilityDetector  # noqa: E402
from producers.encode import RecordEncoder  # noqa: E402
from producers.fleet import Fleet, FleetConfig  # noqa: E402
from stream.schema import decode_telemetry  # noqa: E402


def records(n: int) -> list:
    fleet = Fleet(FleetConfig(nodes=20, links_per_node=4, seed=3, interval_s=5.0))
    enc = RecordEncoder(fleet.topology)
    out: list = []
    while len(out) < n:
        out += [decode_telemetry(v) for v in enc.encode(enc.records(fleet.step()))]
    return out[:n]


def per_record(make, recs: list, warm: int, size: int, learn: str) -> float:
    """Microseconds per record of ``recs[warm:]`` in batches of ``size``."""
    model = make()
    step = getattr(model, learn, None)
    if step is None:  # a context from before learn_many (an older tree): one record at a time
        one = model.learn_one

        def step(batch: list) -> None:
            for rec in batch:
                one(rec)

    for i in range(0, warm, 5000):
        step(recs[i : min(warm, i + 5000)])
    t = time.perf_counter()
    for i in range(warm, len(recs), size):
        step(recs[i : i + size])
    return (time.perf_counter() - t) / (len(recs) - warm) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,200,1000,5000", help="batch sizes (%(default)s)")
    ap.add_argument("--warm", type=int, default=20_000, help="records learned first")
    ap.add_argument("--records", type=int, default=20_000, help="records timed per size")
    ap.add_argument("--rounds", type=int, default=3, help="runs per size (median)")
    a = ap.parse_args()
    recs = records(a.warm + a.records)
    print(f"{'batch':>6} {'context us/rec':>15} {'detector us/rec':>16}")
    for size in (int(s) for s in a.sizes.split(",")):
        ctx = [per_record(NodeContext, recs, a.warm, size, "learn_many") for _ in range(a.rounds)]
        det = [per_record(ReliabilityDetector, recs, a.warm, size, "process")
               for _ in range(a.rounds)]  # fmt: skip
        print(f"{size:>6} {statistics.median(ctx):>15.1f} {statistics.median(det):>16.1f}")


if __name__ == "__main__":
    main()
