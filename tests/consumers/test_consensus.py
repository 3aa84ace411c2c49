"""consumers.consensus offline (``--from-file`` with labels): alerts, recall/FPR summary, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers import consensus
from producers import synthetic
from stream.records import Alert
from stream.settings import Settings

SMALL = [
    "--window",
    "10",
    "--units",
    "8",
    "--warmup-windows",
    "1500",
    "--retrain-every",
    "3000",
    "--sync-retrain",
    "--fit-batch",
    "32",
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cons") / "fleet.jsonl"
    rc = synthetic.main(
        [
            "--output",
            str(path),
            "--rate",
            "0",
            "--nodes",
            "10",
            "--links",
            "2",
            "--seed",
            "4",
            "--interval",
            "5",
            "--incident-rate",
            "3",
            "--categories",
            "consensus_degradation",
            "--count",
            "14000",
            "--progress-interval",
            "0",
        ]
    )
    assert rc == 0
    return path


def test_parser_defaults() -> None:
    args = consensus.build_parser().parse_args([])
    assert args.window == 30 and args.threshold_k == 4.0 and args.open_after == 2


def test_from_file_alerts_and_evaluation(recording: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    labels = recording.with_suffix(".labels.jsonl")
    rc = consensus.main(
        ["--from-file", str(recording), "--labels", str(labels), "--report", str(report), *SMALL]
    )
    assert rc == 0
    s = json.loads(report.read_text())
    e = s["evaluation"]
    assert s["model_version"] >= "consensus-ae-v2" and s["alerts"] > 0
    assert e["incidents"] >= 3 and e["recall_incidents"] >= 0.5
    assert e["fpr_windows"] <= 0.1


def test_alerts_share_the_tracker_schema(recording: Path) -> None:
    args = consensus.build_parser().parse_args(SMALL)
    app = consensus.ConsensusApp(Settings(), args, store=None)
    alerts: list[Alert] = []
    for recs in consensus.iter_file_batches(recording, 1000):
        alerts += app.alerts_for(recs)
    assert alerts and {a.source for a in alerts} == {"consensus-ae"}
    assert {a.category for a in alerts} == {"consensus_degradation"}
    opens = [a for a in alerts if a.status == "open"]
    assert opens and all(0.5 <= a.score <= 1.0 for a in opens)
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert all(a.top_metrics[0].name == "consensus_latency_ms" for a in alerts)
