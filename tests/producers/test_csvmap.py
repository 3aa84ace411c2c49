"""CSV recordings: the column map (missing and bad columns), row conversion, line numbers."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from producers.replay import main
from stream.csvmap import ColumnMap, ColumnMapError, parse_time
from stream.recordings import Recording
from stream.records import DeadLetter, decode
from stream.schema import LEGACY_COLUMNS, decode_telemetry


def rows(path: Path, cmap: ColumnMap | None = None) -> list:
    return list(Recording(path, column_map=cmap).rows())


def test_legacy_columns_map_by_name_and_missing_optional_fields_are_absent(tmp_path: Path):
    header = ",".join(LEGACY_COLUMNS)
    values = {name: "" for name in LEGACY_COLUMNS}  # every optional cell empty
    values.update(
        timestamp="2026-01-05T10:00:00+00:00", node_id="n-9", rtt_ms="7.5", link_type="wan"
    )
    values.update(retransmits="12", bytes_tx="123456789012345678")  # an int beyond float precision
    path = tmp_path / "legacy.csv"
    path.write_text(header + "\n" + ",".join(values[c] for c in LEGACY_COLUMNS) + "\n")
    (row,) = rows(path)
    assert row.errors == [] and row.line == 2 and row.key == b"n-9"
    rec = decode_telemetry(row.value)
    assert (rec.rtt_ms, rec.link_type, rec.retransmits) == (7.5, "wan", 12)
    assert rec.bytes_tx == 123456789012345678
    assert rec.packet_loss is None and rec.cpu_util is None  # missing: allowed by the schema


def test_schema_columns_without_a_header_match_need_a_map(tmp_path: Path):
    path = tmp_path / "other.csv"
    path.write_text("when,host,lat_ms,cpu\n2026-01-05T10:00:00Z,h1,3.5,55\n")
    with pytest.raises(ColumnMapError) as exc:
        rows(path)
    assert "required field timestamp has no column" in str(exc.value)
    assert "required field node_id has no column" in str(exc.value)
    cmap = ColumnMap.parse(["timestamp=when", "node_id=host", "rtt_ms=lat_ms", "cpu_util=cpu"])
    (row,) = rows(path, cmap)
    assert orjson.loads(row.value) == {
        "timestamp": "2026-01-05T10:00:00Z",
        "node_id": "h1",
        "rtt_ms": 3.5,
        "cpu_util": 55.0,
    }


def test_bad_columns_are_all_named_up_front(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("time,host,latency\n")
    cmap = ColumnMap.parse(
        ["timestamp=time", "node_id=hots", "rtt=latency", "region=latency*2"],
        constants=["colour=red"],
    )
    with pytest.raises(ColumnMapError) as exc:
        cmap.bind(["time", "host", "latency"])
    msg = str(exc.value)
    assert "column 'hots' (for node_id) is not in the header (did you mean host?)" in msg
    assert "'rtt' is not a schema field (did you mean rtt_ms?)" in msg
    assert "region is not numeric and cannot be scaled" in msg
    assert "'colour' (--set) is not a schema field" in msg
    with pytest.raises(ColumnMapError, match="expected --column FIELD=COLUMN"):
        ColumnMap.parse(["rtt_ms"])
    with pytest.raises(ColumnMapError, match="bad scale"):
        ColumnMap.parse(["rtt_ms=latency*x"])


def test_bad_cells_are_reported_per_row_with_line_numbers(tmp_path: Path):
    path = tmp_path / "cells.csv.gz"
    text = (
        "timestamp,node_id,rtt_ms,packet_loss,link_type,retransmits\n"
        "2026-01-05T10:00:00Z,n1,1.0,0.01,wan,3\n"  # line 2: good
        "2026-01-05T10:00:01Z,n1,abc,0.01,wan,3\n"  # 3: not a number
        "2026-01-05T10:00:02Z,n1,1.0,1.5,lan,3\n"  # 4: out of range + bad enum
        "2026-01-05T10:00:03Z,n1,1.0,0.01,wan,2.5\n"  # 5: not an integer
        "\n"  # 6: blank, skipped
        '"2026-01-05T10:00:04Z","n1","1.0\n2",0.01,wan,3\n'  # 7-8: quoted newline in a cell
        "2026-01-05T10:00:05Z,n1,1.0\n"  # 9: short row
        "yesterday,n1,1.0,0.01,wan,3\n"  # 10: bad time
        "2026-01-05T10:00:06Z,n1,inf,0.01,wan,3\n"  # 11: not finite
        "2026-01-05T10:00:07Z,n1,2.0,0.02,wan,4\n"  # 12: good
    )
    path.write_bytes(gzip.compress(text.encode()))
    got = {r.line: r for r in rows(path)}
    assert sorted(got) == [2, 3, 4, 5, 8, 9, 10, 11, 12]
    assert not got[2].errors and not got[12].errors

    def reasons(line: int) -> list[tuple[str, str]]:
        return [(e.field, e.reason) for e in got[line].errors]

    assert reasons(3) == [("rtt_ms", "column 'rtt_ms': 'abc' is not a number")]
    assert reasons(4) == [
        ("link_type", "'lan' is not one of dc, metro, wan, edge"),
        ("packet_loss", "1.5 is above the maximum 1 fraction"),
    ]
    assert reasons(5) == [("retransmits", "column 'retransmits': '2.5' is not an integer")]
    assert reasons(8)[0][0] == "rtt_ms"
    assert reasons(9) == [("", "row has 3 cells, the header has 6")]
    assert reasons(10)[0] == ("timestamp", "'yesterday' is not an ISO 8601 / RFC 3339 time")
    assert reasons(11) == [("rtt_ms", "column 'rtt_ms': 'inf' is not a finite number")]
    assert got[3].value == b"2026-01-05T10:00:01Z,n1,abc,0.01,wan,3"  # the row as in the file
    assert got[3].key == b"n1"


def test_time_formats():
    assert parse_time("2026-01-05 10:00:00", assume_utc=True) == ("2026-01-05T10:00:00Z", None)
    assert parse_time("1767607200000", "epoch_ms") == ("2026-01-05T10:00:00Z", None)
    assert parse_time("1767607200", "epoch_s") == ("2026-01-05T10:00:00Z", None)
    assert (
        parse_time("2026-01-05T10:00:00Z", "epoch_s")[1]
        == "'2026-01-05T10:00:00Z' is not an epoch time"
    )
    assert parse_time("1767607200", "iso")[1] is not None


def test_replay_csv_to_a_file_with_a_mapping_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    src = tmp_path / "legacy.csv"
    src.write_text(
        "ts;lat;loss\n".replace(";", ",")
        + "2026-01-05 10:00:00,5,10\n2026-01-05 10:00:10,x,20\n2026-01-05 09:59:55,6,30\n"
    )
    mapping = tmp_path / "map.json"
    mapping.write_text(
        '{"timestamp": "ts", "rtt_ms": "lat", "packet_loss": {"column": "loss", "scale": 0.01}}'
    )
    out, dl = tmp_path / "out.jsonl", tmp_path / "dl.jsonl"
    argv = [str(src), "--mapping", str(mapping), "--set", "node_id=n-42", "--assume-utc"]
    argv += ["--speed", "max", "--output", str(out), "--dead-letter-output", str(dl)]
    assert main([*argv, "--progress-interval", "0"]) == 0
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    # one node: sent in file order, even where its event times go backwards
    assert [(r["timestamp"], r["packet_loss"]) for r in recs] == [
        ("2026-01-05T10:00:00Z", 0.1),
        ("2026-01-05T09:59:55Z", 0.3),
    ]
    (letter,) = [decode(x, DeadLetter) for x in dl.read_bytes().splitlines()]
    assert (letter.source_topic, letter.offset) == (f"file:{src}", 3)
    assert f"{src}:3: bad row: rtt_ms: column 'lat': 'x' is not a number" in capsys.readouterr().err


def test_bad_map_fails_the_command_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    src = tmp_path / "x.csv"
    src.write_text("time,lat\n2026-01-05T10:00:00Z,5\n")
    argv = [str(src), "--timestamp-column", "tme", "--output", str(tmp_path / "o.jsonl")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "column 'tme' (for timestamp) is not in the header (did you mean time?)" in err
    assert "required field node_id has no column" in err
