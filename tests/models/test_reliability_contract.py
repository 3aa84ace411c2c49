"""One contract suite for the reliability models (river checks/common.py style): seeded
determinism, checkpoint (pickle) round-trip, finite scores, missing and new features
tolerated, input not mutated."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from models.reliability import (
    ForestDetector,
    HSTDetector,
    LinkResidual,
    NodeContext,
    ReliabilityDetector,
    TailQuantile,
    TrendTracker,
)
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig


def fleet_records(ticks: int = 200, seed: int = 3, rate: float = 2.0) -> list[dict[str, Any]]:
    fleet = Fleet(FleetConfig(nodes=5, seed=seed, interval_s=5.0, incident_rate=rate))
    enc = RecordEncoder(fleet.topology)
    return [r for _ in range(ticks) for r in enc.records(fleet.step())]


RECORDS = fleet_records()


def z_stream(n: int = 600, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(n, 2))]


# Each model as (factory, learn(model, x), score(model, x) -> float, inputs).
def _hst() -> HSTDetector:
    return HSTDetector(n_trees=5, height=6, window_size=50, seed=7)


def _forest() -> ForestDetector:
    return ForestDetector(
        n_features=2,
        window=256,
        refit_every=128,
        min_fit=128,
        n_estimators=20,
        background=False,
        seed=7,
    )


def _det() -> ReliabilityDetector:
    # a small residual window, so the PCA component is fitted inside these short streams
    return ReliabilityDetector(
        seed=7,
        warmup=500,
        forest_refit_every=1000,
        forest_trees=20,
        residual_window=256,
        residual_min_rows=64,
    )


def _residual_learn(m: LinkResidual, x: dict[str, float]) -> None:
    m.learn_many(["k"], np.array([[x["a"], x["b"], x["a"] + 0.5 * x["b"]]]))
    m.refit()


def _residual_score(m: LinkResidual, x: dict[str, float]) -> float:
    got = m.score_many(["k"], np.array([[x["a"], x["b"], x["a"] + 0.5 * x["b"]]]))[0]
    return float(np.nan_to_num(got, nan=-1.0))  # nan: no fit yet (no opinion)


MODELS: dict[
    str,
    tuple[Callable[[], Any], Callable[[Any, Any], None], Callable[[Any, Any], float], list[Any]],
] = {
    "hst": (_hst, lambda m, x: m.learn_one(x), lambda m, x: m.score_one(x), z_stream()),
    "forest": (
        _forest,
        lambda m, x: m.learn_one(np.array([x["a"], x["b"]])),
        lambda m, x: m.score_one(np.array([x["a"], x["b"]])),
        z_stream(),
    ),
    "context": (
        NodeContext,
        lambda m, x: m.learn_one(x),
        lambda m, x: max((abs(v) for v in m.score_one(x).z.values()), default=0.0),
        RECORDS[:1500],
    ),
    "calibration": (
        TailQuantile,
        lambda m, x: m.learn_one(x["a"]),
        lambda m, x: m.score_one(x["a"]),
        z_stream(),
    ),
    "trend": (
        TrendTracker,
        lambda m, x: m.learn_one(x["node_id"], x),
        lambda m, x: m.score_one(x["node_id"], x),
        RECORDS[:1500],
    ),
    "residual": (
        lambda: LinkResidual(window=256, min_rows=64, refit_every=64),
        _residual_learn,
        _residual_score,
        z_stream(),
    ),
    "detector": (_det, lambda m, x: m.learn_one(x), lambda m, x: m.score_one(x), RECORDS[:1500]),
}


def run(name: str) -> tuple[Any, list[float]]:
    factory, learn, score, xs = MODELS[name]
    model = factory()
    scores = []
    for x in xs:
        scores.append(score(model, x))
        learn(model, x)
    return model, scores


@pytest.mark.parametrize("name", MODELS)
def test_seeded_determinism_and_finite_scores(name: str) -> None:
    _, a = run(name)
    _, b = run(name)
    assert a == b
    assert all(math.isfinite(s) for s in a)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_continues_identically(name: str) -> None:
    factory, learn, score, xs = MODELS[name]
    model = factory()
    half = len(xs) // 2
    for x in xs[:half]:
        learn(model, x)
    clone = pickle.loads(pickle.dumps(model))
    for x in xs[half:]:
        assert score(model, x) == score(clone, x)
        learn(model, x)
        learn(clone, x)


@pytest.mark.parametrize("name", MODELS)
def test_input_not_mutated(name: str) -> None:
    factory, learn, score, xs = MODELS[name]
    model = factory()
    for x in xs[:300]:
        before = copy.deepcopy(x)
        score(model, x)
        learn(model, x)
        assert x == before


@pytest.mark.parametrize("name", ["hst", "context", "trend", "detector"])
def test_missing_and_new_features_are_tolerated(name: str) -> None:
    factory, learn, score, xs = MODELS[name]
    model = factory()
    for i, x in enumerate(xs[:400]):
        x = dict(x)
        if i % 3 == 0:  # drop a feature
            x.pop(sorted(k for k in x if k not in ("node_id", "timestamp"))[-1])
        if i % 5 == 0:  # a feature the model has never seen
            x["brand_new_metric"] = 42.0
        s = score(model, x)
        assert math.isfinite(s)
        learn(model, x)


def test_detector_scores_in_unit_interval_and_process_is_deterministic() -> None:
    out = []
    for _ in range(2):
        det = _det()
        scored, alerts = det.process(RECORDS)
        out.append(([s.score for s in scored], [a.alert_id for a in alerts]))
        assert all(0.0 <= s.score <= 1.0 for s in scored)
    assert out[0] == out[1]


def test_score_one_does_not_learn() -> None:
    det = _det()
    det.process(RECORDS[:1000])
    state = pickle.dumps(det)
    for rec in RECORDS[1000:1100]:
        det.score_one(rec)
    assert pickle.dumps(det) == state


def test_score_never_depends_on_later_records() -> None:
    a, _ = _det().process(RECORDS[:1200])
    b, _ = _det().process(RECORDS[:1200] + RECORDS[1200:1500])
    assert [s.score for s in a] == [s.score for s in b[:1200]]


def test_scores_and_alerts_do_not_depend_on_how_the_stream_is_cut_into_batches() -> None:
    """A file is read 5,000 records at a time, a Kafka poll returns a few hundred: the same
    records must give the same scores and the same alerts (the detector cuts every batch at
    fixed record counts of the whole stream, and a tick carries the versions that scored it)."""
    records = fleet_records(ticks=600, seed=4, rate=3.0)

    def run(size: int) -> tuple[list[float], list[bytes]]:
        det = ReliabilityDetector(
            seed=7,
            warmup=500,
            forest_refit_every=1500,
            forest_trees=10,
            residual_window=512,
            residual_min_rows=128,
        )
        scores: list[float] = []
        alerts: list[Any] = []
        for i in range(0, len(records), size):
            s, a = det.process(records[i : i + size])
            scores += [x.score for x in s]
            alerts += a
        return scores, sorted(pickle.dumps(a) for a in alerts)

    one = run(5000)
    assert one[1], "the fixture should raise alerts"
    for size in (137, 1000):
        assert run(size) == one, size
