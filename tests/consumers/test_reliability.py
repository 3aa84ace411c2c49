"""Offline reading of recordings by consumers.reliability: plain and gzip give the same records."""

from __future__ import annotations

import gzip

from consumers.reliability import read_records

LINES = [
    b'{"timestamp":"2026-01-05T00:00:00Z","node_id":"n-001","rtt_ms":1.5}\n',
    b'{"timestamp":"2026-01-05T00:00:05Z","node_id":"n-001","rtt_ms":-1}\n',
]
CSV = "time,rtt\n2026-01-05T00:00:00Z,1.5\n2026-01-05T00:00:05Z,2.5\n"


def test_gzip_recordings_read_like_plain_ones(tmp_path):
    plain, packed = tmp_path / "r.jsonl", tmp_path / "r.jsonl.gz"
    plain.write_bytes(b"".join(LINES))
    packed.write_bytes(gzip.compress(b"".join(LINES)))
    a = list(read_records(str(plain), {}, "n", 5.0))
    b = list(read_records(str(packed), {}, "n", 5.0))
    assert a == b and a[0][0].rtt_ms == 1.5 and a[1][0] is None and "rtt_ms" in a[1][1]


def test_gzip_csv_with_a_column_map(tmp_path):
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    recs = list(read_records(str(path), {"time": "timestamp", "rtt": "rtt_ms"}, "n-9", 5.0))
    assert [(r["node_id"], r["rtt_ms"]) for r, _ in recs] == [("n-9", 1.5), ("n-9", 2.5)]
