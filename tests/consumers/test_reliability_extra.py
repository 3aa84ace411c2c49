"""consumers.reliability over a CSV of unnamed server metrics: every column matching --extra
is scored as an extra metric, other columns stay out, valid edge values never crash it."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from consumers import reliability
from stream.records import DeadLetter, decode


def test_a_server_metrics_csv_is_ingested_with_one_pattern(tmp_path: Path):
    rng = random.Random(5)
    lines = ["timestamp,node_id,split,label,m01,m02,m03,m04"]
    for i in range(1200):
        node = f"omi-{i % 2 + 1}"
        t = 1_767_225_600 + 300 * (i // 2)  # epoch seconds, 5-minute steps
        m = [
            rng.random(),
            0.0,
            -2.5 + rng.random() if i % 3 else 1e300,
            7.0,
        ]  # noise, zero, edge, flat
        lines.append(
            f"{t},{node},{'train' if i < 600 else 'test'},0," + ",".join(repr(x) for x in m)
        )
    path = tmp_path / "omi.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    out = tmp_path / "out"
    scores = out / "scores.jsonl"
    argv = ["--from-file", str(path), "--extra", "m*", "--output-dir", str(out / "topics")]
    argv += ["--no-checkpoint", "--scores-output", str(scores), "--param", "warmup=200"]
    assert reliability.main(argv) == 0
    dead = out / "topics" / "dwcp.dead-letter.jsonl"
    letters = dead.read_bytes().splitlines() if dead.exists() else []
    assert [decode(x, DeadLetter) for x in letters] == []
    rows = [json.loads(x) for x in scores.read_text().splitlines()]
    assert len(rows) == 1200 and {r["node_id"] for r in rows} == {"omi-1", "omi-2"}
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert max(r["score"] for r in rows) > 0.0  # the extra metrics are read
