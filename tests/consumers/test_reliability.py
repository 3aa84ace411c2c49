"""consumers.reliability over files: through the same loop as Kafka, so bad rows are dead
letters (never a crash), gzip reads like plain, and CSV columns map onto the schema."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from pathlib import Path

import pytest

from consumers import reliability
from consumers.reliability import COMPONENTS
from models.reliability import ReliabilityDetector
from stream.records import DeadLetter, decode, encode
from stream.schema import decode_telemetry

LINES = [
    b'{"timestamp":"2026-01-05T00:00:00Z","node_id":"n-001","rtt_ms":1.5,"cpu_util":0.2}\n',
    b'{"timestamp":"2026-01-05T00:00:05Z","node_id":"n-001","rtt_ms":-1}\n',
    b'{"timestamp":"2026-01-05T00:00:10Z","node_id":"n-001","cpu_util":-0.5}\n',
    b"{not json\n",
    b'{"timestamp":"2026-01-05T00:00:15Z","node_id":"n-001","rtt_ms":2.5,"cpu_util":0.3}\n',
]
CSV = "time,rtt,cpu\n2026-01-05T00:00:00Z,1.5,0.2\n2026-01-05T00:00:05Z,fast,0.2\n2026-01-05T00:00:10Z,2.5,-3\n"


def run_file(path: Path, out: Path, *extra: str) -> tuple[list[DeadLetter], list[dict]]:
    flags = ["--from-file", str(path), "--output-dir", str(out / "topics"), "--no-checkpoint"]
    scores = out / "scores.jsonl"
    assert reliability.main([*flags, "--scores-output", str(scores), *extra]) == 0
    letters_path = out / "topics" / "dwcp.dead-letter.jsonl"
    letters = [decode(line, DeadLetter) for line in letters_path.read_bytes().splitlines()]
    return letters, [json.loads(line) for line in scores.read_text().splitlines()]


def test_bad_rows_of_a_file_are_dead_letters_with_their_line_number(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(LINES))
    letters, scores = run_file(path, tmp_path / "plain")
    assert [(d.offset, d.source_topic) for d in letters] == [(2, "r.jsonl"), (3, "r.jsonl"), (4, "r.jsonl")]
    assert "rtt_ms" in letters[0].reason and "cpu_util" in letters[1].reason  # negatives refused
    assert letters[2].original == b"{not json"
    assert [s["timestamp"][-9:-6] for s in scores] == [":00", ":15"]  # the good rows, scored


def test_gzip_recordings_give_the_same_outputs_as_plain_ones(tmp_path: Path):
    plain, packed = tmp_path / "r.jsonl", tmp_path / "r.jsonl.gz"
    plain.write_bytes(b"".join(LINES))
    packed.write_bytes(gzip.compress(b"".join(LINES)))
    letters_a, scores_a = run_file(plain, tmp_path / "a")
    letters_b, scores_b = run_file(packed, tmp_path / "b")
    assert scores_a == scores_b
    assert [(d.offset, d.reason) for d in letters_a] == [(d.offset, d.reason) for d in letters_b]


def test_a_csv_maps_its_columns_and_dead_letters_bad_cells(tmp_path: Path):
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    letters, scores = run_file(
        path, tmp_path / "csv", "--column", "timestamp=time", "--column", "rtt_ms=rtt",
        "--column", "cpu_util=cpu", "--set", "node_id=n-9",
    )  # fmt: skip
    assert [s["node_id"] for s in scores] == ["n-9"]
    assert [d.offset for d in letters] == [3, 4]  # the header is line 1
    assert "'fast' is not a number" in letters[0].reason and "cpu_util" in letters[1].reason
    assert letters[0].original == b"2026-01-05T00:00:05Z,fast,0.2"


@pytest.mark.fault
def test_one_record_stamped_minutes_ahead_changes_no_alert_and_is_dead_lettered(tmp_path: Path):
    from producers.encode import RecordEncoder
    from producers.fleet import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(nodes=8, links_per_node=1, seed=3, interval_s=5.0, incident_rate=4.0,
                              categories=("crash", "network_failure")))  # fmt: skip
    enc = RecordEncoder(fleet.topology)
    lines = [v for _ in range(400) for v in enc.encode(enc.records(fleet.step()))]
    poison = json.loads(lines[2000])
    poison["timestamp"] = "2026-01-05T00:31:40Z"  # 11 minutes after the recording's time there
    clean, poisoned = tmp_path / "clean.jsonl", tmp_path / "poisoned.jsonl"
    clean.write_bytes(b"".join(v + b"\n" for v in lines))
    poisoned.write_bytes(
        b"".join(v + b"\n" for v in [*lines[:2000], json.dumps(poison).encode(), *lines[2000:]])
    )
    extra = ("--param", "warmup=300", "--param", "background=false")
    for name, path in (("a", clean), ("b", poisoned)):
        assert reliability.main(["--from-file", str(path), "--output-dir", str(tmp_path / name),
                                 "--no-checkpoint", "--summary", str(tmp_path / f"{name}.json"),
                                 *extra]) == 0  # fmt: skip
    # accepted, it would move its partition's watermark 11 minutes on (records after it would
    # no longer wait to be sorted) and hold the partition's commits until the stream caught up
    loop = json.loads((tmp_path / "b.json").read_text())["loop"]
    assert loop["late_records"] == 0 and loop["rejected_ahead"] == 1
    alerts_a = (tmp_path / "a" / "dwcp.alerts.jsonl").read_bytes()
    alerts_b = (tmp_path / "b" / "dwcp.alerts.jsonl").read_bytes()
    assert b'"crash"' in alerts_a  # there is a crash to miss
    assert alerts_a == alerts_b
    letters = (tmp_path / "b" / "dwcp.dead-letter.jsonl").read_bytes().splitlines()
    assert len(letters) == 1 and "ahead of its partition's newest record" in decode(letters[0], DeadLetter).reason


def test_the_metrics_count_its_alerts_open_incidents_and_forest_refits(tmp_path: Path):
    from producers.encode import RecordEncoder
    from producers.fleet import Fleet, FleetConfig
    from stream.app import App

    fleet = Fleet(FleetConfig(nodes=8, links_per_node=1, seed=3, interval_s=5.0, incident_rate=4.0,
                              categories=("crash", "network_failure")))  # fmt: skip
    enc = RecordEncoder(fleet.topology)
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(v + b"\n" for _ in range(400) for v in enc.encode(enc.records(fleet.step()))))
    app = App(
        [reliability.ReliabilityProcessor],
        ["--from-file", str(path), "--output-dir", str(tmp_path / "out"), "--no-checkpoint",
         "--param", "warmup=300", "--param", "background=false"],
        environ={},
    )  # fmt: skip
    app.run(install_signals=False)
    published: dict[tuple[str, str], int] = {}
    for line in (tmp_path / "out" / "dwcp.alerts.jsonl").read_bytes().splitlines():
        a = json.loads(line)
        key = (a.get("category") or "none", a["status"])
        published[key] = published.get(key, 0) + 1
    counted = {
        (dict(k)["category"], dict(k)["status"]): int(v)
        for k, v in app.metrics.samples("dwcp_alerts_total").items()
    }
    assert ("crash", "open") in counted and counted == published
    opened = sum(n for (_c, s), n in published.items() if s == "open")
    closed = sum(n for (_c, s), n in published.items() if s == "resolved")
    [open_now] = app.metrics.samples("dwcp_open_incidents").values()  # read at the end
    assert open_now == opened - closed
    fits = app.metrics.samples("dwcp_retrain_duration_seconds_count")
    assert fits[(("model", "iforest"), ("processor", "reliability"))] >= 1
    [(labels, one)] = app.metrics.samples("dwcp_model_info").items()
    assert one == 1 and dict(labels)["version"].startswith("if-s0-v")


def test_a_restored_detector_refits_where_this_run_says(tmp_path: Path):
    """A checkpoint saved by a file run (inline refits, installed when fitted) restored by a
    live run refits in the background and installs at fixed points, as a new live detector
    does; a file run restoring a live checkpoint refits inline at the same points."""
    from stream.settings import Settings

    parse = reliability.build_parser().parse_args
    saved = reliability.ReliabilityProcessor(Settings(), parse(["--from-file", str(tmp_path)]), None)
    forest = saved.detector.forest_
    assert not forest.background and forest.swap_after is None
    state = {"detector": saved.detector}
    live = reliability.ReliabilityProcessor(Settings(), parse(["--refit-in", "thread"]), state)
    try:
        fresh = reliability.ReliabilityProcessor._new(parse([]))
        assert live.detector.forest_.background and fresh.forest_.background
        assert live.detector.forest_.swap_after == fresh.forest_.swap_after is not None
    finally:
        live.close()
    again = reliability.ReliabilityProcessor(Settings(), parse(["--from-file", str(tmp_path)]), state)
    assert not again.detector.forest_.background
    assert again.detector.forest_.swap_after == fresh.forest_.swap_after


def test_the_evaluation_reports_the_threshold_the_restored_detector_used(tmp_path: Path):
    """A detector restored from a checkpoint keeps the threshold it was saved with; the
    ``--labels`` evaluation must report that one, not the flag's default."""
    from producers import synthetic
    from stream.app import App

    rec = tmp_path / "fleet.jsonl"
    assert synthetic.main(["--output", str(rec), "--rate", "0", "--nodes", "4", "--seed", "3",
                           "--count", "4000", "--progress-interval", "0"]) == 0  # fmt: skip
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    common = ["--labels", str(rec.with_suffix(".labels.jsonl")), "--with-state", "--state-dir",
              str(tmp_path / "s"), "--param", "warmup=300", "--param", "background=false"]  # fmt: skip
    for path, flags, name in ((rec, ["--threshold", "0.99"], "a"), (empty, [], "b")):
        App([reliability.ReliabilityProcessor],
            ["--from-file", str(path), *common, *flags, "--output-dir", str(tmp_path / name),
             "--summary", str(tmp_path / f"{name}.json")], environ={}).run(install_signals=False)  # fmt: skip
    first, restored = (json.loads((tmp_path / f"{n}.json").read_text())["reliability"] for n in "ab")
    assert first["evaluation"]["config"]["threshold"] == 0.99
    assert restored["evaluation"]["config"]["threshold"] == 0.99  # the flag's default is 0.995
    assert restored["evaluation"]["config"]["records"] == first["evaluation"]["config"]["records"] > 0


def test_the_scores_file_names_the_components_behind_each_score(tmp_path: Path):
    from producers.encode import RecordEncoder
    from producers.fleet import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(nodes=6, seed=4, interval_s=5.0, incident_rate=0.0))
    enc = RecordEncoder(fleet.topology)
    recs = [r for _ in range(250) for r in enc.records(fleet.step())]
    recs[-5] = {**recs[-5], "rtt_ms": 50 * recs[-5]["rtt_ms"]}
    lines = [encode(r) for r in recs]
    path = tmp_path / "fleet.jsonl"
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    scores = tmp_path / "scores.csv"
    argv = ["--from-file", str(path), "--no-checkpoint", "--scores-output", str(scores)]
    assert reliability.main([*argv, "--param", "warmup=500"]) == 0
    rows = list(csv.DictReader(scores.read_text().splitlines()))
    assert list(rows[0])[-5:] == ["hst", "forest", "deviation", "trend", "residual"]
    ordered = sorted(map(decode_telemetry, lines), key=lambda r: (r.timestamp, r.node_id))
    want, _ = ReliabilityDetector(warmup=500).process(ordered)  # in event-time order, as read
    assert len(rows) == len(want)
    for row, sc in zip(rows, want, strict=True):
        assert row["score"] == f"{sc.score:.6f}"
        assert [row[c] for c in COMPONENTS] == [f"{getattr(sc, c):.6f}" for c in COMPONENTS]
    jump = decode_telemetry(lines[-5])  # the record whose RTT jumped: the plain deviation's
    key = (jump.node_id, jump.timestamp.isoformat())
    at = [r for r in rows if (r["node_id"], r["timestamp"]) == key]
    assert max(float(r["deviation"]) for r in at) > 0.999


@pytest.mark.parametrize(
    ("param", "named"),
    [("rises_only=[\"disc_util\"]", "disc_util"), ("queue_explain=-1", "queue_explain"),
     ("no_such_knob=1", "no_such_knob")],  # fmt: skip
)
def test_a_parameter_the_detector_refuses_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, named: str
):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(LINES))
    argv = ["--from-file", str(path), "--output-dir", str(tmp_path / "t"), "--no-checkpoint"]
    assert reliability.main([*argv, "--param", param]) == 1
    err = capsys.readouterr().err
    assert "bad detector parameter (--param)" in err and named in err
    assert "Traceback" not in err


def test_a_restored_detector_alerts_with_this_runs_knobs(tmp_path: Path):
    """--confirm-s and --explained-only decide alerts, not what was learned: a restart with
    other values applies them to the restored detector (the threshold stays the saved one)."""
    from stream.settings import Settings

    parse = reliability.build_parser().parse_args
    file = ["--from-file", str(tmp_path)]
    saved = reliability.ReliabilityProcessor(Settings(), parse(file), None)
    tracker = saved.detector.tracker_
    assert (tracker.confirm_s, tracker.explained_only) == (0.0, False)
    state = {"detector": pickle.loads(pickle.dumps(saved.detector))}
    flags = [*file, "--confirm-s", "120", "--explained-only", "--threshold", "0.9"]
    again = reliability.ReliabilityProcessor(Settings(), parse(flags), state)
    tracker = again.detector.tracker_
    assert (tracker.confirm_s, tracker.explained_only) == (120.0, True)
    assert again.detector.threshold == saved.detector.threshold == 0.995
    fresh = reliability.ReliabilityProcessor._new(parse(flags))
    assert (fresh.tracker_.confirm_s, fresh.tracker_.explained_only) == (120.0, True)
