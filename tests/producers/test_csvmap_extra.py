"""CSV columns as extra metrics: ``--column extra.NAME=COLUMN``, ``--extra GLOB``, ASD's header."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from producers.replay import main
from stream.csvmap import ColumnMap, ColumnMapError
from stream.recordings import Recording
from stream.schema import EXTRA_MAX, decode_telemetry

ASD_HEADER = "timestamp,node_id,split,label," + ",".join(f"m{i:02d}" for i in range(1, 20))
ASD_ROW = "2026-01-01T00:00:00Z,omi-1,train,0," + ",".join(f"0.{i:02d}" for i in range(1, 20))
ASD = Path("/work/shared/data/asd/omi-1.csv.gz")


def write_asd_like(path: Path, rows: list[str]) -> Path:
    with gzip.open(path, "wt") as f:
        f.write(ASD_HEADER + "\n" + "\n".join(rows) + "\n")
    return path


def test_asd_header_maps_with_one_pattern_and_split_label_stay_out(tmp_path: Path):
    path = write_asd_like(
        tmp_path / "omi.csv.gz", [ASD_ROW, ASD_ROW.replace("00:00:00", "00:05:00")]
    )
    rec_map = ColumnMap.parse(extra=["m*"])
    recording = Recording(path, column_map=rec_map)
    rows = list(recording.rows())
    assert [r.errors for r in rows] == [[], []]
    assert recording.mapper is not None and recording.mapper.ignored == ["split", "label"]
    rec = decode_telemetry(rows[0].value)
    assert rec.node_id == "omi-1" and rec.timestamp.isoformat() == "2026-01-01T00:00:00+00:00"
    assert list(rec.extra) == [f"m{i:02d}" for i in range(1, 20)]
    assert rec.extra["m07"] == 0.07
    assert "split" not in orjson.loads(rows[0].value) and "label" not in rec.extra


@pytest.mark.skipif(not ASD.is_file(), reason="ASD data not on this machine")
def test_the_real_asd_file_reads_without_a_bad_row():
    recording = Recording(ASD, column_map=ColumnMap.parse(extra=["m*"]))
    rows = list(recording.rows())
    assert len(rows) == 12_960 and not any(r.errors for r in rows)
    assert len(decode_telemetry(rows[-1].value).extra) == 19


def test_explicit_extra_columns_rename_and_scale():
    mapper = ColumnMap.parse(["extra.cpu=CPU %*0.01", "extra.net.rx_total=rx"]).bind(
        ["timestamp", "node_id", "CPU %", "rx"]
    )
    rec, errors = mapper.convert(["2026-01-05T10:00:00Z", "h", "55", "1000"])
    assert errors == [] and rec["extra"] == {"cpu": 0.55, "net.rx_total": 1000.0}


def test_a_pattern_never_takes_a_column_that_feeds_a_schema_field():
    mapper = ColumnMap.parse(["extra.lat=latency"], extra=["*"]).bind(
        ["timestamp", "node_id", "rtt_ms", "latency", "temp"]
    )
    rec, _ = mapper.convert(["2026-01-05T10:00:00Z", "h", "3", "4", "5"])
    assert rec == {
        "timestamp": "2026-01-05T10:00:00Z",
        "node_id": "h",
        "rtt_ms": 3.0,
        "extra": {"lat": 4.0, "temp": 5.0},
    }


def test_bad_extra_maps_are_all_named_up_front():
    cmap = ColumnMap.parse(
        ["extra.CPU=cpu", "extra.rtt_ms=cpu", "extra.ok=nope"], extra=["x*", "C*"]
    )
    with pytest.raises(ColumnMapError) as exc:
        cmap.bind(["timestamp", "node_id", "cpu", "Cache Hits"])
    msg = str(exc.value)
    assert "'extra.CPU': name 'CPU' does not match ^[a-z][a-z0-9_.]{0,63}$" in msg
    assert "'extra.rtt_ms': name 'rtt_ms' is a schema field" in msg
    assert "column 'nope' (for extra.ok) is not in the header" in msg
    assert "--extra 'x*' matches no column that is not already mapped" in msg
    assert "column 'Cache Hits' (matched by --extra 'C*') cannot be an extra metric" in msg
    assert "--column extra.NAME='Cache Hits'" in msg


def test_more_columns_than_a_record_may_carry():
    header = ["timestamp", "node_id", *(f"m{i}" for i in range(EXTRA_MAX + 1))]
    with pytest.raises(ColumnMapError, match=f"{EXTRA_MAX + 1} columns map to extra metrics"):
        ColumnMap.parse(extra=["m*"]).bind(header)


def test_bad_cells_name_the_metric_and_empty_cells_are_absent():
    mapper = ColumnMap.parse(extra=["m*"]).bind(["timestamp", "node_id", "m1", "m2", "m3"])
    rec, errors = mapper.convert(["2026-01-05T10:00:00Z", "h", "x", "inf", ""])
    assert [(e.field, e.reason) for e in errors] == [
        ("extra.m1", "column 'm1': 'x' is not a number"),
        ("extra.m2", "column 'm2': 'inf' is not a finite number"),
    ]
    assert "extra" not in rec


def test_an_extra_constant_and_a_mapping_file_entry(tmp_path: Path):
    cmap = ColumnMap.parse(
        constants=["extra.capacity=64"], mapping={"extra.load": "Load", "extra": ["m*"]}
    )
    rec, errors = cmap.bind(["timestamp", "node_id", "Load", "m1"]).convert(
        ["2026-01-05T10:00:00Z", "h", "0.5", "2"]
    )
    assert errors == [] and rec["extra"] == {"load": 0.5, "m1": 2.0, "capacity": 64.0}
    with pytest.raises(ColumnMapError, match="want a list of patterns"):
        ColumnMap.parse(mapping={"extra": "m*"})


def test_replay_maps_extra_columns_from_the_command_line(tmp_path: Path):
    src = write_asd_like(tmp_path / "omi.csv.gz", [ASD_ROW])
    out = tmp_path / "out.jsonl"
    argv = [str(src), "--extra", "m*", "--speed", "max", "--output", str(out)]
    assert main([*argv, "--progress-interval", "0"]) == 0
    (rec,) = [json.loads(x) for x in out.read_bytes().splitlines()]
    assert set(rec) == {"timestamp", "node_id", "extra"} and len(rec["extra"]) == 19
