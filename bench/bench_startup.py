"""Launch to first processed record, and the longest stall, of every consumer (not a test).

Produces one backlog of synthetic telemetry (``--records``, 6 partitions) into fresh topics,
then launches each consumer (``python -m consumers.<name> --from-beginning``) on it, one after
another, twice: **cold** (an empty state folder: every model starts unfitted) and **warm**
(restarting from the checkpoint the cold run left, in a new group so it reads the backlog
again). For each run it polls the group's committed offsets every 0.1 s and reports:

* ``first_s``: launch to the first commit (the first batch processed, flushed and committed),
* ``stall_s``: the longest time between two commits that moved, after the first one and before
  95% of the backlog is committed (a fit inside the loop shows here; the tail is left out: an
  aligned backlog's last records wait ``--align-idle-ms`` for the partitions to go idle),
* ``rate``: records/s over the run, and whether the backlog was finished within ``--limit``.

The target (issue 14) is ``first_s`` under 10 s for every consumer, cold or warm. Starts
nothing else: it expects the broker (``bash scripts/kafka-local.sh start``).

    python bench/bench_startup.py [--records 40000] [--limit 90] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from stream.kafka import make_admin  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
CONSUMERS = ("ingest", "reliability", "consensus", "bandwidth", "compression")


def run_one(settings: Settings, name: str, state: Path, limit: float, total: int) -> dict:
    group = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    topic = settings.topic("telemetry")
    argv = [sys.executable, "-m", f"consumers.{name}", "--from-beginning", "--group-id", group,
            "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix",
            settings.topic_prefix, "--state-dir", str(state), "--max-seconds", str(limit),
            "--interval", "5"]  # fmt: skip
    env = {**os.environ, "DWCP_BACKEND": "confluent", "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = state / f"{name}.log"
    t0 = time.monotonic()
    with log.open("ab") as out, make_admin(settings) as admin:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        first = last_move = None
        stall, done, seen = 0.0, 0, 0
        while proc.poll() is None:
            time.sleep(0.1)
            done = sum(admin.group_offsets(group, topic).values())
            now = time.monotonic() - t0
            if done > seen:
                if first is None:
                    first = now
                elif last_move is not None and seen < 0.95 * total:
                    # not the tail: an aligned backlog's last 15 s of event time wait for the
                    # partitions to go idle (--align-idle-ms, 5 s) before they are handed on
                    stall = max(stall, now - last_move)
                last_move, seen = now, done
            if done >= total:
                proc.terminate()  # SIGTERM: finish, flush, commit, checkpoint
        proc.wait(120)
    elapsed = (last_move or 0.0) - (first or 0.0)
    return {
        "first_s": None if first is None else round(first, 1),
        "stall_s": round(stall, 1),
        "rate": round(seen / elapsed) if elapsed > 0 else None,
        "records": seen,
        "finished": seen >= total,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=40000)
    ap.add_argument("--limit", type=float, default=90.0, help="seconds per run at most")
    ap.add_argument("--consumers", default=",".join(CONSUMERS))
    ap.add_argument("--json", action="store_true", help=f"also write {RESULTS.name}")
    a = ap.parse_args(argv)
    settings = Settings(topic_prefix=f"bench-start-{uuid.uuid4().hex[:8]}.", partitions=6)
    ensure_topics(settings)
    py = sys.executable
    subprocess.run([py, "-m", "producers.synthetic", "--nodes", "20", "--links", "2", "--interval",
                    "5", "--seed", "3", "--incident-rate", "1", "--rate", "0", "--count",
                    str(a.records), "--progress-interval", "0", "--topic-prefix",
                    settings.topic_prefix, "--backend", "confluent"], check=True)  # fmt: skip
    rows: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in a.consumers.split(","):
                state = Path(tmp) / name
                state.mkdir()
                for kind in ("cold", "warm"):
                    r = run_one(settings, name, state, a.limit, a.records)
                    rows[f"{name} {kind}"] = r
                    print(f"{name:12s} {kind}: first record after {r['first_s']} s, longest "
                          f"stall {r['stall_s']} s, {r['rate']} records/s, "
                          f"{'finished' if r['finished'] else 'NOT finished'} "
                          f"({r['records']:,d} of {a.records:,d})", flush=True)  # fmt: skip
    finally:
        with make_admin(settings) as admin:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])
    worst = max((r["first_s"] or float("inf")) for r in rows.values())
    print(f"\nslowest launch to first record: {worst} s (target < 10 s)")
    if a.json:
        RESULTS.write_text(json.dumps({"records": a.records, "limit_s": a.limit, "runs": rows},
                                      indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
