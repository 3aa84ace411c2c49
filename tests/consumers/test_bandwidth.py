"""consumers.bandwidth offline (``--from-file``): forecasts, accuracy summary, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from consumers import bandwidth
from consumers.lstm import LSTMProcessor
from producers import synthetic
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.app import App
from stream.recordings import decoded_batches as file_batches
from stream.records import Prediction, encode
from stream.schema import decode_telemetry_lines
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
    flags = ["--from-file", str(recording), "--summary", str(report), "--no-checkpoint"]
    bandwidth.BandwidthProcessor.configure(bandwidth.build_parser().parse_args(SMALL))
    app = App([bandwidth.BandwidthProcessor], [*flags, *SMALL], environ={})
    app.run(install_signals=False)
    doc = json.loads(report.read_text())
    s = doc["bandwidth"]
    assert doc["loop"]["records"] == s["records"] == 9600 and s["predictions"] > 0
    assert s["model_version"] >= "bandwidth-lstm-v2" and s["retrains"]
    h5 = s["accuracy"]["5"]
    assert h5["n"] > 1000 and 0.6 < h5["coverage"] <= 1.0
    assert h5["mae"] < 2 * h5["mae_persistence"]  # sane, not a claim of skill on 6 min
    # the metrics carry the same figures: MAE per horizon and model, and every retrain
    mae = {
        (d["horizon"], d["model"]): v
        for k, v in app.metrics.samples("dwcp_forecast_mean_absolute_error").items()
        for d in [dict(k)]
    }
    assert mae[("5", "published")] == pytest.approx(h5["mae"], rel=1e-3)
    assert mae[("5", "persistence")] == pytest.approx(h5["mae_persistence"], rel=1e-3)
    fits = app.metrics.samples("dwcp_retrain_duration_seconds_count")
    assert fits[(("model", "lstm"), ("processor", "bandwidth"))] == len(s["retrains"])


def test_predictions_are_valid_records(recording: Path) -> None:
    args = bandwidth.build_parser().parse_args(SMALL)
    app = bandwidth.BandwidthProcessor(Settings(), args, None)
    preds: list[Prediction] = []
    for recs in file_batches(recording, 1000):
        preds += app.predictions(recs)
    fc = [p for p in preds if p.kind == "bandwidth_forecast"]
    assert fc and {p.horizon for p in fc} == {1, 5}
    assert all(p.lower <= p.value <= p.upper for p in fc)
    assert all(p.peer_id and p.model_version.startswith("bandwidth-lstm-v") for p in fc)
    assert isinstance(args, argparse.Namespace)


def _encoded_as_records(
    recs: list[Any], horizons: tuple[int, ...], members: tuple[str, ...], arrays: list[Any]
) -> list[tuple[bytes, bytes]]:
    """What the consumer published before :func:`bandwidth.encode_forecasts`: a Prediction per
    record and horizon, encoded."""
    value, lower, upper, weights, versions = arrays
    out = []
    for i, r in enumerate(recs):
        for j, h in enumerate(horizons):
            rounded = weights[i, j].round(3)
            w = rounded.tolist()
            p = Prediction(
                kind="bandwidth_forecast", node_id=r.node_id, peer_id=r.peer_id,
                event_time=r.timestamp, model_version=f"bandwidth-lstm-v{versions[i]}",
                target="throughput_mbps", horizon=h, value=round(float(value[i, j]), 3),
                lower=round(float(lower[i, j]), 3), upper=round(float(upper[i, j]), 3),
                extra={"member": members[int(rounded.argmax())],
                       "weights": {m: x for m, x in zip(members, w, strict=True) if x}},
            )  # fmt: skip
            out.append((r.node_id.encode(), encode(p)))
    return out


def test_forecasts_are_encoded_byte_for_byte_as_prediction_records() -> None:
    """The consumer's hand-assembled JSON is what ``encode(Prediction(...))`` writes, for
    awkward values too: halves at the 4th decimal, zero and tied weights, NaN and infinite
    bounds and weights, huge values, ids that need escaping, times with microseconds."""
    rng = np.random.default_rng(4)
    n, horizons, members = 400, (1, 5, 15), ("lstm", "persistence", "ewma", "harmonic")
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    recs = [
        SimpleNamespace(
            node_id=["n-1", 'n"2', "nœud-3", "n\\4"][i % 4], peer_id=f"p-{i % 7}",
            timestamp=t0 + dt.timedelta(seconds=i * 5, microseconds=(i % 3) * 250),
        )  # fmt: skip
        for i in range(n)
    ]
    value = rng.lognormal(4, 2, (n, 3))
    value[::5] = np.round(value[::5], 3) + 0.0005  # near halves of the last decimal
    value[::9, 0] = 0.0
    value[7, 1] = 1e300
    lower, upper = value * rng.uniform(0.5, 1, (n, 3)), value * rng.uniform(1, 2, (n, 3))
    lower[3, 0], upper[4, 2], upper[5, 1] = np.nan, np.inf, -0.0
    weights = rng.dirichlet(np.ones(4), (n, 3))
    weights[::4, :, 0] = 0.0  # an LSTM without an error yet
    weights[::6] = [1.0, 0.0, 0.0, 0.0]
    weights[::10] = 0.25  # all tied: the first member leads
    weights[11, 1], weights[12, 2, 3] = np.nan, 1.5  # not expected; encoded as records would be
    versions = rng.integers(0, 12, n)
    arrays = [value, lower, upper, weights, versions]
    got = bandwidth.encode_forecasts(recs, horizons, members, *arrays)
    assert got == _encoded_as_records(recs, horizons, members, arrays)
    assert bandwidth.encode_forecasts([], horizons, members, *(a[:0] for a in arrays)) == []
    with pytest.raises(ValueError, match="horizons must be >= 1"):
        bandwidth.encode_forecasts(recs[:1], (0,), members, *(a[:1, :1] for a in arrays[:4]),
                                   versions[:1])  # fmt: skip


def fleet_telemetry(ticks: int) -> list[Any]:
    """Decoded telemetry of 4 nodes x 4 links, ``ticks`` intervals, in event-time order."""
    fleet = Fleet(FleetConfig(nodes=4, seed=5, interval_s=1.0, incident_rate=0.0))
    enc = RecordEncoder(fleet.topology)
    lines = []
    for _ in range(ticks):
        lines += enc.encode(enc.records(fleet.step()))
    return decode_telemetry_lines(b"\n".join(lines) + b"\n")


def _forecasts(app: bandwidth.BandwidthProcessor, batches: list[list[Any]]) -> dict[Any, float]:
    out: dict[Any, float] = {}
    for recs in batches:
        for p in app.predictions(recs):
            if p.kind == "bandwidth_forecast":
                out[(p.node_id, p.peer_id, p.event_time, p.horizon)] = p.value
    return out


def test_forecasts_do_not_depend_on_how_links_are_batched(tmp_path: Path) -> None:
    """A Kafka batch holds one partition's records: hundreds of one link in a row. The
    forecasts of a fitted model must be the same as for the interleaved file order (before the
    fix a link's later records overwrote its ring buffer before its earlier windows were read:
    MAE 535 through Kafka against 107 offline)."""
    recs = fleet_telemetry(800)
    args = bandwidth.build_parser().parse_args([*SMALL, "--warmup-windows", "600", "--no-retrain"])
    app = bandwidth.BandwidthProcessor(Settings(), args, None)
    warm = 150 * 16  # 4 nodes x 4 links
    _forecasts(app, [recs[i : i + 400] for i in range(0, warm, 400)])
    assert app.forecaster.ready
    other = pickle.loads(pickle.dumps(app))
    rest = recs[warm:]
    interleaved = _forecasts(app, [rest[i : i + 200] for i in range(0, len(rest), 200)])
    by_link = sorted(rest, key=lambda r: (r.node_id, r.peer_id))  # 650 records per link
    grouped = _forecasts(other, [by_link])
    assert len(interleaved) == len(rest) * 2
    assert grouped.keys() == interleaved.keys()
    diff = max(abs(grouped[k] - interleaved[k]) / (1.0 + abs(v)) for k, v in interleaved.items())
    assert diff < 1e-3


def test_a_restored_forecaster_fits_where_this_run_says() -> None:
    """A checkpoint saved by an inline-fit run (a file) must not make a live run fit inline,
    blocking its loop for every retrain; nor the other way round."""
    parse = bandwidth.build_parser().parse_args
    live = [f for f in SMALL if f != "--sync-retrain"]
    saved = bandwidth.BandwidthProcessor(Settings(), parse(SMALL), None).forecaster
    assert not saved.background and not saved.trainer_.background
    assert saved.trainer_.executor is None  # inline fits: no training worker
    users = LSTMProcessor._pool_users  # processors of earlier tests that still hold it
    proc = bandwidth.BandwidthProcessor(
        Settings(), parse([*live, "--retrain-pause", "0.05"]), pickle.loads(pickle.dumps(saved))
    )
    restored = proc.forecaster
    assert restored.background and restored.trainer_.background
    assert restored.retrain_pause_s == restored.trainer_.pause_s == 0.05
    pool = restored.trainer_.executor  # live: background fits in the shared worker process
    assert pool is not None and pool is LSTMProcessor._pool
    thread = bandwidth.BandwidthProcessor(Settings(), parse([*live, "--train-in", "thread"]), None)
    assert thread.forecaster.trainer_.executor is None
    back = bandwidth.BandwidthProcessor(
        Settings(), parse(SMALL), pickle.loads(pickle.dumps(restored))
    )
    assert not back.forecaster.background and not back.forecaster.trainer_.background
    assert back.forecaster.trainer_.executor is None
    assert LSTMProcessor._pool_users == users + 1
    proc.close()
    assert LSTMProcessor._pool_users == users
    if not users:  # its last user gone, the worker is shut down
        assert LSTMProcessor._pool is None
        with pytest.raises(RuntimeError):
            pool.submit(int)
