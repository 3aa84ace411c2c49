"""Scale-out (issue 11, item 5): records/s of one vs two reliability processes in one consumer
group on the same backlog, the cost of state shards and the cost of event-time alignment, side
by side in one run, with the limit (a bare consume of the same topic).

    python bench/bench_scaleout.py [--records 120000] [--rounds 3] [--json]

One recording (``producers.synthetic``, 30 nodes x 2 links at 10 s, seed 11) is produced once to
a 6-partition topic on the local broker (``scripts/kafka-local.sh start``). Each configuration
then reads the whole backlog in a new group from an empty state folder, with the live settings
(IsolationForest refits in a worker process):

* ``one state``: ``consumers.reliability``, one state for every key (the default);
* ``no alignment``: the same with ``--no-align`` (partitions handled as they come);
* ``6 shards``: ``--state-shards 6``, one member;
* ``6 shards, 2 members``: two such processes in one group, sharing the state folder.

Records/s is the group's committed records over the time from their first move to the last
record committed (polled every 0.2 s), so start-up (imports, joining the group) is left out.
Medians over ``--rounds``; ratios against ``one state``. Results: ``bench/results/scaleout.json``
with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
sys.path.insert(0, str(Path(__file__).resolve().parent))
import orjson  # noqa: E402
from bench_capacity import _committed, raw_consume  # noqa: E402

from stream.kafka import make_admin, make_producer  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scaleout.json"
CONFIGS: dict[str, tuple[int, list[str]]] = {
    "one state": (1, []),
    "no alignment": (1, ["--no-align"]),
    "6 shards": (1, ["--state-shards", "6"]),
    "6 shards, 2 members": (2, ["--state-shards", "6"]),
}


def _env() -> dict[str, str]:
    return {**os.environ, "DWCP_BACKEND": "confluent"}


def record(path: Path, n: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "producers.synthetic", "--nodes", "30", "--links", "2",
         "--interval", "10", "--seed", "11", "--incident-rate", "0.5", "--count", str(n),
         "--rate", "0", "--progress-interval", "0", "--output", str(path)],
        check=True, env=_env(), stdout=subprocess.DEVNULL,
    )  # fmt: skip


def produce(settings: Settings, path: Path) -> int:
    n = 0
    with make_producer(settings) as p, path.open("rb") as f:
        for line in f:
            if line.strip():
                p.produce(settings.topic("telemetry"), line.rstrip(b"\n"),
                          orjson.loads(line)["node_id"].encode())  # fmt: skip
                n += 1
        p.flush(120)
    return n


def run(settings: Settings, members: int, flags: list[str], n: int, limit: float) -> dict[str, Any]:
    """One configuration on the backlog: records/s from the group's commits."""
    group = f"bench-scaleout-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="scaleout-"))
    topic = settings.topic("telemetry")
    argv = [sys.executable, "-m", "consumers.reliability", *flags, "--from-beginning",
            "--state-dir", str(work / "state"), "--topic-prefix", settings.topic_prefix,
            "--group-id", group, "--interval", "10", "--max-seconds", str(limit)]  # fmt: skip
    procs = []
    for k in range(members):
        out = (work / f"m{k}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [*argv, "--summary", str(work / f"m{k}.json")], env=_env(), stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    first = last = None
    seen = 0
    t0 = time.monotonic()
    with make_admin(settings) as admin:
        while any(p.poll() is None for p in procs) and seen < n:
            time.sleep(0.2)
            done = _committed(admin, group, topic) or 0
            if done > seen:
                now = time.monotonic() - t0
                first = now if first is None else first
                last, seen = now, done
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    per: list[int | None] = []
    for k in range(members):
        try:
            per.append(json.loads((work / f"m{k}.json").read_text())["loop"]["records"])
        except (OSError, ValueError, KeyError):
            per.append(None)
    if seen < n:
        tail = (work / "m0.log").read_text()[-2000:]
        shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"bench_scaleout: {flags or 'one state'} committed {seen:,d} of {n:,d}:\n{tail}")
    shutil.rmtree(work, ignore_errors=True)
    rate = seen / (last - first) if first is not None and last and last > first else 0.0
    return {"rate": round(rate), "records_per_member": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=120_000, help="backlog size (default 120,000)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per configuration (median; default 3)")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds one run may take (default 300)")
    ap.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    ap.add_argument("--json", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    a = ap.parse_args(argv)
    settings = Settings(bootstrap_servers=a.bootstrap_servers, backend="confluent",
                        topic_prefix=f"bench-so-{uuid.uuid4().hex[:8]}.", partitions=6)  # fmt: skip
    ensure_topics(settings)
    work = Path(tempfile.mkdtemp(prefix="scaleout-rec-"))
    try:
        rec = work / "rec.jsonl"
        record(rec, a.records)
        n = produce(settings, rec)
        print(f"bench_scaleout: {n:,d} records on 6 partitions", file=sys.stderr)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
        raw: list[float] = []
        for r in range(a.rounds):  # configurations interleaved: machine noise hits them alike
            raw.append(raw_consume(settings, n))
            for name, (members, flags) in CONFIGS.items():
                got = run(settings, members, flags, n, a.limit)
                runs[name].append(got)
                print(f"round {r + 1}: {name}: {got['rate']:,d} records/s "
                      f"{got['records_per_member']}", file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with make_admin(settings) as admin:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])
    med = {name: statistics.median(x["rate"] for x in xs) for name, xs in runs.items()}
    base = med["one state"]
    doc = {
        "command": "python bench/bench_scaleout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "records": n,
        "raw_consume_rate": round(statistics.median(raw)),
        "configs": {
            name: {
                "median_rate": round(med[name]),
                "vs_one_state": round(med[name] / base, 3) if base else None,
                "runs": runs[name],
            }
            for name in CONFIGS
        },
        "two_members_vs_one_sharded": round(med["6 shards, 2 members"] / med["6 shards"], 3)
        if med["6 shards"]
        else None,
        "alignment_cost": round(1 - med["one state"] / med["no alignment"], 3) if med["no alignment"] else None,
    }
    print(json.dumps({k: v for k, v in doc.items() if k != "configs"} | {
        "median_rates": {k: v["median_rate"] for k, v in doc["configs"].items()}}, indent=2))
    if a.json:
        RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
