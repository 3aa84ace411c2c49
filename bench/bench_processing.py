"""Per-record processing cost of the processors, from a warm state, without Kafka (not a test).

    python bench/bench_processing.py [--records 60000] [--reps 3] [--only LABEL ...] [--json]

What the loop itself costs once the models are fitted, apart from the broker and from first
fits: the same fleet as ``bench/bench_capacity.py`` (20 nodes x 4 links, 5 s, seed 3) learns
``--warm-records`` records from a file into a state folder (fits inline, once), then every
configuration runs ``--records`` more records of the same fleet (event time continuing) from a
file, restoring a fresh copy of that state each time: ``python -m consumers run ...
--from-file --with-state`` with live settings (background fits, as deployed). The figure is the
loop's own records/s (``--summary``: from the first poll to the end, so imports and the
restore are left out; the final checkpoint is in).

Side by side, in one run, interleaved ``--reps`` times (medians; the machine is noisy):

* the four-model pipeline process and ``reliability`` alone, each with the garbage collector
  as the shell sets it (``stream/collector.py``) and with Python's defaults
  (``DWCP_GC_THRESHOLD=0``: how it ran before);
* the pipeline with its LSTM retrains in a thread of the process (``--train-in thread``: how
  they ran before the training worker process);
* the limit a user would compare with: the bare river MinMaxScaler + HalfSpaceTrees loop
  (``bench_capacity.bare_hst``) on the same records, pre-decoded.

Results: ``bench/results/processing.json`` with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_capacity as cap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "processing.json"
PIPELINE = ["consumers", "run", *cap.PROCESSORS, "--bandwidth.warmup-windows", "3000",
            "--consensus.warmup-windows", "3000"]  # fmt: skip
RELIABILITY = ["consumers", "run", "reliability"]
BARE_HST = "bare HST loop (river, pre-decoded)"
#: label -> (argv tail after ``python -m``, extra environment)
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "pipeline": (PIPELINE, {}),
    "pipeline, LSTM retrains in a thread": (
        [*PIPELINE, "--bandwidth.train-in", "thread", "--consensus.train-in", "thread"],
        {},
    ),
    "pipeline, Python's collector defaults": (PIPELINE, {"DWCP_GC_THRESHOLD": "0"}),
    "reliability": (RELIABILITY, {}),
    "reliability, Python's collector defaults": (RELIABILITY, {"DWCP_GC_THRESHOLD": "0"}),
}


def run_config(tail: list[str], env: dict[str, str], live: Path, state: Path, work: Path) -> dict:
    """One run from a copy of ``state``: the loop's records/s and the process's CPU seconds."""
    copy = work / "state-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(state, copy)
    summary = work / "summary.json"
    argv = [sys.executable, "-m", *tail, "--from-file", str(live), "--with-state", "--state-dir",
            str(copy), "--group-id", cap.GROUP, "--output-dir", str(work / "out"),
            "--summary", str(summary), "--interval", "60"]  # fmt: skip
    before = os.times()
    t0 = time.monotonic()
    with (work / "runs.log").open("ab") as log:
        subprocess.run(argv, check=True, env={**cap._env(), **env}, stdout=log,
                       stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.monotonic() - t0
    after = os.times()
    loop = json.loads(summary.read_text())["loop"]
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {"rate": loop["records"] / loop["seconds"], "loop_s": loop["seconds"],
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=60_000, help="records per run (default 60000)")
    ap.add_argument("--warm-records", type=int, default=60_000)
    ap.add_argument("--reps", type=int, default=3, help="runs of each configuration (default 3)")
    ap.add_argument("--only", action="append", metavar="LABEL",
                    help="run this configuration (repeatable; default all): " + "; ".join(CONFIGS))  # fmt: skip
    ap.add_argument("--json", action="store_true", help=f"write {RESULTS.relative_to(cap.ROOT)}")
    args = ap.parse_args(argv)
    unknown = set(args.only or ()) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configuration {sorted(unknown)}; known: {list(CONFIGS)}")
    configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory(prefix="bench-processing-") as tmp:
        work = Path(tmp)
        state = work / "state"
        print(f"warm state: {args.warm_records:,} records, fits inline ...", flush=True)
        start, warm_s = cap.warm_state(state, args.warm_records, False, work / "warm.log")
        live = work / "live.jsonl"
        subprocess.run(cap._fleet("--rate", "0", "--count", str(args.records), "--start", start,
                                  "--output", str(live)),
                       check=True, env=cap._env(), stdout=subprocess.DEVNULL)  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
        runs[BARE_HST] = []
        values = live.read_bytes().splitlines()
        for rep in range(args.reps):
            for label, (tail, env) in configs.items():
                r = run_config(tail, env, live, state, work)
                runs[label].append(r)
                print(f"rep {rep + 1}: {label}: {r['rate']:,.0f} records/s "
                      f"(loop {r['loop_s']:.1f} s, cpu {r['cpu_s']:.1f} s)", flush=True)  # fmt: skip
            rate = cap.bare_hst(values)
            runs[BARE_HST].append({"rate": rate})
            print(f"rep {rep + 1}: bare HST loop: {rate:,.0f} records/s", flush=True)
    medians = {k: round(statistics.median(r["rate"] for r in v)) for k, v in runs.items()}
    hst = medians[BARE_HST]
    ratios: dict[str, float] = {}
    for label in configs:
        ratios[f"{label} / bare HST"] = round(medians[label] / hst, 3)
    for name in ("pipeline", "reliability"):
        slow = f"{name}, Python's collector defaults"
        if name in medians and slow in medians:
            ratios[f"{name}: tuned collector / Python's defaults"] = round(
                medians[name] / medians[slow], 3
            )
    thread = "pipeline, LSTM retrains in a thread"
    if "pipeline" in medians and thread in medians:
        ratios["pipeline: retrains in a worker process / in a thread"] = round(
            medians["pipeline"] / medians[thread], 3
        )
    print("\nmedian records/s (loop only, warm state, from a file)")
    for k, v in medians.items():
        print(f"  {k:45s} {v:>8,}")
    for k, v in ratios.items():
        print(f"  {k:60s} {v:.3f}x")
    if args.json:
        doc = {"command": "python bench/bench_processing.py --json", "date": time.strftime("%Y-%m-%d"),
               "cpus": os.cpu_count(), "fleet": cap.FLEET, "records": args.records,
               "warm_records": args.warm_records, "warm_s": round(warm_s, 1), "reps": args.reps,
               "median_rate": medians, "ratios": ratios, "runs": runs}  # fmt: skip
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(cap.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
