"""consumers.bandwidth offline (``--from-file``): forecasts, accuracy summary, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from consumers import bandwidth
from producers import synthetic
from stream.records import Prediction
from stream.settings import Settings

SMALL = [
    "--window",
    "10",
    "--units",
    "8",
    "--horizons",
    "1,5",
    "--warmup-windows",
    "1500",
    "--retrain-every",
    "3000",
    "--retrain-windows",
    "1500",
    "--sync-retrain",
    "--fit-batch",
    "32",
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bw") / "fleet.jsonl"
    rc = synthetic.main(
        [
            "--output",
            str(path),
            "--rate",
            "0",
            "--nodes",
            "6",
            "--seed",
            "3",
            "--count",
            "9600",
            "--progress-interval",
            "0",
        ]
    )
    assert rc == 0
    return path


def test_parser_defaults() -> None:
    args = bandwidth.build_parser().parse_args([])
    assert args.horizons == "1,5,15" and args.window == 30 and args.coverage == 0.9


def test_from_file_reports_accuracy(recording: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    rc = bandwidth.main(["--from-file", str(recording), "--report", str(report), *SMALL])
    assert rc == 0
    s = json.loads(report.read_text())
    assert s["records"] == 9600 and s["predictions"] > 0
    assert s["model_version"] >= "bandwidth-lstm-v2" and s["retrains"]
    h5 = s["accuracy"]["5"]
    assert h5["n"] > 1000 and 0.6 < h5["coverage"] <= 1.0
    assert h5["mae"] < 2 * h5["mae_persistence"]  # sane, not a claim of skill on 6 min


def test_predictions_are_valid_records(recording: Path) -> None:
    args = bandwidth.build_parser().parse_args(SMALL)
    app = bandwidth.BandwidthApp(Settings(), args, store=None)
    preds: list[Prediction] = []
    for recs in bandwidth.iter_file_batches(recording, 1000):
        preds += app.predictions(recs)
    fc = [p for p in preds if p.kind == "bandwidth_forecast"]
    assert fc and {p.horizon for p in fc} == {1, 5}
    assert all(p.lower <= p.value <= p.upper for p in fc)
    assert all(p.peer_id and p.model_version.startswith("bandwidth-lstm-v") for p in fc)
    assert isinstance(args, argparse.Namespace)
