"""The replay without a broker: event order, pacing on a fake clock, the incident library."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
from pathlib import Path

import orjson
import pytest

from producers import incident_library
from producers.replay_run import ReplayOptions, replay
from producers.schedule import LabelItem, event_order
from stream.recordings import Recording, Row, labels_path_for, read_labels
from stream.records import CATEGORIES, SEVERITIES, IncidentLabel, decode

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
REPO = Path(__file__).resolve().parents[2]


def row(line: int, node: str, t: float) -> Row:
    return Row(line, f"{node}@{t}".encode(), node.encode(), t, node)


def test_event_order_keeps_node_order_and_sorts_across_nodes():
    rows = [row(1, "a", 10), row(2, "b", 3), row(3, "a", 4), row(4, "b", 11), row(5, "c", 1)]
    rows.insert(2, Row(9, b"{bad", None, errors=[object()]))  # type: ignore[list-item]
    lab = IncidentLabel(
        incident_id="i", node_id="b", category="crash", severity="low", start=T0, end=T0
    )
    labels = [(1, lab)]
    got = [
        (t, item.line)
        for t, item in event_order(rows, labels, window_s=100, label_time=lambda _l: 3.0)
    ]
    # a's sample at t=4 comes after its t=10 sample in the file: it keeps its place (t=10)
    assert got == [(10, 9), (1, 5), (3.0, 1), (3, 2), (10, 1), (10, 3), (11, 4)]
    # a small window sends what is older than the newest record minus the window
    order = [item.line for _t, item in event_order(rows[:2], window_s=0)]
    assert order == [1, 2]
    assert isinstance(next(iter(event_order([], labels)))[1], LabelItem)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class Collect:
    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.sent, self.labels_sent, self.letters = clock, [], [], []
        self.log: list[bytes | str] = []

    def telemetry(self, keys, values):
        self.sent += [(self.clock.now, v) for v in values]
        self.log += values

    def labels(self, labels):
        self.labels_sent += [(self.clock.now, lab) for lab in labels]
        self.log += ["label"] * len(labels)

    def dead_letter(self, key, letter):
        self.letters.append(letter)

    def flush(self):
        pass


@pytest.mark.parametrize("speed", [0.0, 1.0, 10.0])
def test_pacing_on_a_fake_clock(tmp_path: Path, speed: float):
    path = tmp_path / "r.jsonl"
    lines = []
    for k in range(20):
        for i, node in enumerate(("a", "b")):
            ts = T0 + dt.timedelta(seconds=5 * k + i)
            lines.append(orjson.dumps({"timestamp": ts, "node_id": node}, option=orjson.OPT_UTC_Z))
    path.write_bytes(b"\n".join(lines))
    lab = IncidentLabel(
        incident_id="i",
        node_id="b",
        category="crash",
        severity="low",
        start=T0 + dt.timedelta(seconds=31),
        end=T0 + dt.timedelta(seconds=60),
    )
    clock = FakeClock()
    sink = Collect(clock)
    stats = replay(
        Recording(path),
        sink,
        ReplayOptions(speed=speed, progress_every_s=0),
        threading.Event(),
        labels=[(1, lab)],
        clock=clock,
        sleep=clock.sleep,
    )
    assert stats.records == 40 and stats.labels == 1
    assert [v for _t, v in sink.sent] == lines
    (label_at,) = [t for t, _lab in sink.labels_sent]
    if speed == 0:
        assert clock.now == 1000.0
        return
    for (t, v), line in zip(sink.sent, lines, strict=True):
        event = (dt.datetime.fromisoformat(json.loads(line)["timestamp"]) - T0).total_seconds()
        assert t == pytest.approx(1000.0 + event / speed, abs=1e-6), v
    assert label_at == pytest.approx(1000.0 + 31 / speed)
    # the label goes out after the telemetry before its start and before the rest
    assert sink.log.index("label") == lines.index(
        b'{"timestamp":"2026-01-05T00:00:31Z","node_id":"b"}'
    )


def test_labels_file_and_bad_label_lines(tmp_path: Path):
    assert labels_path_for("x/run.csv") == "x/run.labels.jsonl"
    assert labels_path_for("run.jsonl") == "run.labels.jsonl"
    p = tmp_path / "l.jsonl"
    good = {"incident_id": "i", "node_id": "n", "category": "crash", "severity": "low"}
    good |= {"start": "2026-01-05T00:00:00Z", "end": "2026-01-05T00:01:00Z"}
    backwards = good | {"end": "2026-01-04T00:00:00Z"}
    unknown = good | {"category": "meteor"}
    p.write_bytes(b"\n".join(orjson.dumps(x) for x in (good, backwards, unknown)) + b"\n\n")
    labels, bad = read_labels(p)
    assert [n for n, _lab in labels] == [1]
    assert [(r.line, r.key) for r in bad] == [(2, b"n"), (3, b"n")]
    assert "is before start" in bad[0].errors[0].reason
    assert "meteor" in bad[1].errors[0].reason


def test_incident_library_covers_every_category_and_severity():
    lib = REPO / "data" / "incidents"
    manifest = json.loads((lib / "manifest.json").read_text())
    labels = [
        decode(x, IncidentLabel) for x in (lib / "fleet.labels.jsonl").read_bytes().splitlines()
    ]
    assert len(labels) == manifest["labels"] >= 100
    seen = {(lab.category, lab.severity) for lab in labels}
    assert seen == {(c, s) for c in CATEGORIES for s in SEVERITIES}
    with gzip.open(lib / "fleet.jsonl.gz") as f:
        assert sum(1 for _ in f) == manifest["records"]


@pytest.mark.slow
def test_incident_library_matches_its_command(capsys: pytest.CaptureFixture[str]):
    # rebuilt in memory with the fixed seed: byte-identical to the files in the repository
    assert incident_library.main(["--check", "--out", str(REPO / "data" / "incidents")]) == 0


@pytest.mark.parametrize("module", ["stream.csvmap", "stream.recordings", "producers.schedule"])
def test_doctests(module: str):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
