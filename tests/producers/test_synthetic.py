"""``python -m producers.synthetic`` without Kafka: files, determinism, pacing, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from producers.fleet import FleetConfig
from producers.runner import Limits, run
from producers.sinks import FileSink, default_labels_path
from producers.synthetic import build_parser, main
from stream.records import IncidentLabel, decode
from stream.schema import decode_telemetry_lines

REPO = Path(__file__).resolve().parents[2]
QUIET = ["--progress-interval", "0"]


def cli(tmp_path: Path, name: str, *args: str) -> tuple[bytes, bytes]:
    out = tmp_path / f"{name}.jsonl"
    assert main(["--output", str(out), "--rate", "0", *QUIET, *args]) == 0
    return out.read_bytes(), (tmp_path / f"{name}.labels.jsonl").read_bytes()


def test_output_writes_telemetry_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    tele, labels = cli(
        tmp_path,
        "run",
        "--count",
        "20000",
        "--nodes",
        "20",
        "--incident-rate",
        "3",
        "--interval",
        "10",
    )
    recs = decode_telemetry_lines(tele)
    assert len(recs) == 20000 and tele.endswith(b"\n")
    assert len({r.node_id for r in recs}) == 20
    labs = [decode(line, IncidentLabel) for line in labels.splitlines()]
    assert labs and {x.node_id for x in labs} <= {r.node_id for r in recs}
    assert all(x.start <= recs[-1].timestamp for x in labs)  # announced when they start
    err = capsys.readouterr().err
    assert "done: 20,000 events" in err and f"{len(labs)} incident labels" in err


def test_same_options_same_bytes(tmp_path: Path):
    args = ("--count", "5000", "--nodes", "10", "--incident-rate", "5", "--seed", "42")
    a = cli(tmp_path, "a", *args)
    assert a == cli(tmp_path, "b", *args)
    assert a[0] != cli(tmp_path, "c", *args[:-1], "43")[0]
    assert a[0] != cli(tmp_path, "d", *args, "--start", "2026-02-01T00:00:00Z")[0]


def test_count_prefix_is_stable(tmp_path: Path):
    """Stopping earlier gives a prefix of the longer stream: pacing and limits don't change data."""
    short, _ = cli(tmp_path, "s", "--count", "1234", "--nodes", "7")
    long, _ = cli(tmp_path, "l", "--count", "3000", "--nodes", "7")
    assert long.startswith(short) and short.count(b"\n") == 1234


def test_options_reach_the_records(tmp_path: Path):
    tele, _ = cli(
        tmp_path,
        "o",
        "--count",
        "60",
        "--nodes",
        "5",
        "--links",
        "3",
        "--interval",
        "60",
        "--regions",
        "2",
        "--start",
        "2026-06-01T12:00:00+02:00",
        "--incident-rate",
        "0",
    )
    recs = decode_telemetry_lines(tele)
    assert {r.region for r in recs} == {"us-east", "eu-west"}
    times = sorted({r.timestamp.replace(microsecond=0, second=0) for r in recs})
    assert (
        times[0].isoformat() == "2026-06-01T10:00:00+00:00" and (times[1] - times[0]).seconds == 60
    )
    assert len(recs) == 60 and len({(r.node_id, r.peer_id) for r in recs}) == 15


def test_default_labels_path():
    assert default_labels_path("out/day.jsonl") == "out/day.labels.jsonl"
    assert default_labels_path("/tmp/x") == "/tmp/x.labels.jsonl"


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--nodes",
        "--rate",
        "--duration",
        "--count",
        "--seed",
        "--incident-rate",
        "--interval",
        "--speedup",
        "--start",
        "--output",
        "--labels-output",
        "--bootstrap-servers",
        "--backend",
    ):
        assert flag in text
    assert (
        "(default: 50)" in text
        and "2026-01-05T00:00:00Z" in text
        and "per hour of EVENT time" in text
    )


@pytest.mark.parametrize(
    "bad", [["--categories", "oom"], ["--rate", "-1"], ["--start", "2026-01-05T00:00:00"]]
)
def test_bad_options_are_rejected(bad: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        main(["--output", "-", *bad])
    assert exc.value.code == 2


def _run_paced(tmp_path: Path, limits: Limits, config: FleetConfig) -> float:
    sink = FileSink(str(tmp_path / "p.jsonl"), None)
    t0 = time.monotonic()
    try:
        run(config, sink, limits, threading.Event())
    finally:
        sink.close()
    return time.monotonic() - t0


def test_rate_paces_events(tmp_path: Path):
    elapsed = _run_paced(tmp_path, Limits(count=1500, rate=3000.0), FleetConfig(nodes=10))
    assert 0.4 <= elapsed < 2.0


def test_speedup_paces_event_time(tmp_path: Path):
    # 10 s of event time per sample at 1000x: 20 samples take ~0.19 s of wall time (~0 unpaced)
    cfg = FleetConfig(nodes=5, interval_s=10.0)
    elapsed = _run_paced(tmp_path, Limits(count=20 * 20, speedup=1000.0), cfg)
    assert 0.15 <= elapsed < 1.5


def test_duration_stops(tmp_path: Path):
    elapsed = _run_paced(tmp_path, Limits(duration_s=0.5, rate=1000.0), FleetConfig(nodes=5))
    assert 0.45 <= elapsed < 1.5
    assert 300 <= (tmp_path / "p.jsonl").read_bytes().count(b"\n") <= 700


@pytest.mark.timeout(60)
def test_sigterm_flushes_and_exits_zero(tmp_path: Path):
    out = tmp_path / "sig.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producers.synthetic",
            "--output",
            str(out),
            "--rate",
            "5000",
            "--incident-rate",
            "5",
            "--progress-interval",
            "0.2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = err.decode()
    assert "sent " in text and "events/s" in text and "done: " in text  # progress and summary
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(decode_telemetry_lines(data)) > 1000  # every line whole
