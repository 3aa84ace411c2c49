"""consumers.consensus offline (``--from-file`` with labels): alerts, recall/FPR summary, CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers import consensus
from producers import synthetic
from stream.recordings import decoded_batches
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
        ["--from-file", str(recording), "--labels", str(labels), "--summary", str(report), *SMALL]
    )
    assert rc == 0
    s = json.loads(report.read_text())["consensus"]
    e = s["evaluation"]
    assert s["model_version"] >= "consensus-ae-v2" and s["alerts"] > 0
    assert e["incidents"] >= 3 and e["recall_incidents"] >= 0.5
    assert e["fpr_windows"] <= 0.1


def test_alerts_share_the_tracker_schema(recording: Path) -> None:
    args = consensus.build_parser().parse_args(SMALL)
    app = consensus.ConsensusProcessor(Settings(), args, None)
    alerts: list[Alert] = []
    for recs in decoded_batches(recording, 1000):
        alerts += app.alerts_for(recs)
    assert alerts and {a.source for a in alerts} == {"consensus-ae"}
    assert {a.category for a in alerts} == {"consensus_degradation"}
    opens = [a for a in alerts if a.status == "open"]
    assert opens and all(0.5 <= a.score <= 1.0 for a in opens)
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert all(a.top_metrics[0].name == "consensus_latency_ms" for a in alerts)


def _raw_scores(det: Any, batches: list[list[Any]]) -> dict[tuple[Any, float], float]:
    out: dict[tuple[Any, float], float] = {}
    for samples in batches:
        res = det.process(samples)
        for k, raw in zip(res.index.tolist(), res.raw.tolist(), strict=True):
            out[(samples[k].node, samples[k].ts)] = raw
    return out


def test_scores_do_not_depend_on_how_nodes_are_batched() -> None:
    """A Kafka batch holds one partition's records: hundreds of one node's samples in a row.
    A fitted detector must score them as it scores the interleaved file order (before the fix
    a node's later samples overwrote its ring buffer before its earlier windows were read)."""
    from models.autoencoder.detector import ConsensusDetector
    from models.autoencoder.features import NodeSample

    rng = np.random.default_rng(0)
    nodes, ticks = 4, 1000
    samples = [
        NodeSample(f"n{n}", float(t), 5.0 + n + rng.normal(0, 0.3), 20.0, 1.0 + 0.1 * n)
        for t in range(ticks)
        for n in range(nodes)
    ]
    det = ConsensusDetector(
        window=10, units=8, warmup_windows=400, retrain_every=10**9, background=False, batch_size=32
    )
    warm = 150 * nodes
    _raw_scores(det, [samples[i : i + 200] for i in range(0, warm, 200)])
    assert det.ready
    other = pickle.loads(pickle.dumps(det))
    rest = samples[warm:]
    interleaved = _raw_scores(det, [rest[i : i + 200] for i in range(0, len(rest), 200)])
    grouped = _raw_scores(other, [sorted(rest, key=lambda s: s.node)])  # 850 per node
    assert len(interleaved) == len(rest)
    assert grouped.keys() == interleaved.keys()
    diff = max(abs(grouped[k] - v) / (1e-6 + abs(v)) for k, v in interleaved.items())
    assert diff < 1e-3


def test_a_restored_detector_fits_where_this_run_says() -> None:
    """A checkpoint saved by an inline-fit run must not make a live run fit inline."""
    parse = consensus.build_parser().parse_args
    saved = consensus.ConsensusProcessor(Settings(), parse(SMALL), None)
    assert not saved.detector.background and not saved.detector.trainer_.background
    live = [f for f in SMALL if f != "--sync-retrain"]
    state = pickle.loads(pickle.dumps((saved.sampler, saved.detector, saved.tracker)))
    proc = consensus.ConsensusProcessor(Settings(), parse(live), state)
    restored = proc.detector
    assert restored.background and restored.trainer_.background
    assert restored.trainer_.executor is not None  # background fits in the training worker
    back = consensus.ConsensusProcessor(Settings(), parse(SMALL), pickle.loads(pickle.dumps(state)))
    assert not back.detector.background and not back.detector.trainer_.background
    assert back.detector.trainer_.executor is None
    proc.close()


def test_confirm_s_holds_short_streaks_back_and_is_this_runs_flag(recording: Path) -> None:
    parse = consensus.build_parser().parse_args

    def opens(extra: list[str]) -> list[Alert]:
        app = consensus.ConsensusProcessor(Settings(), parse(SMALL + extra), None)
        out: list[Alert] = []
        for recs in decoded_batches(recording, 1000):
            out += app.alerts_for(recs)
        return [a for a in out if a.status == "open"]

    at_once, confirmed = opens([]), opens(["--confirm-s", "120"])
    assert confirmed and len(confirmed) < len(at_once)  # short streaks never alert
    assert parse([]).confirm_s == 0.0
    # an alerting knob: a restored tracker takes this run's value
    saved = consensus.ConsensusProcessor(Settings(), parse(SMALL), None)
    state = pickle.loads(pickle.dumps((saved.sampler, saved.detector, saved.tracker)))
    restored = consensus.ConsensusProcessor(
        Settings(), parse([*SMALL, "--confirm-s", "120"]), state
    )
    assert restored.tracker.confirm_s == 120.0
