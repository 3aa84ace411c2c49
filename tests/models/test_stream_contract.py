"""One contract suite for every model a processor runs (river ``checks`` style, at the level
of a batch step): the reliability detector, the bandwidth forecaster, the consensus
autoencoder and the compression policy (through its link selector). Each must be seeded
deterministic with finite outputs, continue identically after a checkpoint (pickle) round
trip in mid-stream, leave its input alone, and score without learning.

(`test_reliability_contract.py` holds the same checks for the reliability detector's parts.)
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from models.autoencoder.detector import ConsensusDetector
from models.autoencoder.features import NodeSample
from models.compression.policy import CompressionPolicy
from models.compression.portable import Dense, PortablePolicy
from models.compression.selector import LinkSelector
from models.compression.states import STATE_FIELDS
from models.compression.transfer import TransferModel
from models.forecast.online import OnlineForecaster
from models.reliability import ReliabilityDetector
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig


def fleet_batches(ticks: int, per_batch: int, seed: int = 3) -> list[list[dict[str, Any]]]:
    """Telemetry dicts of a small fleet with incidents, cut into batches."""
    fleet = Fleet(FleetConfig(nodes=4, seed=seed, interval_s=5.0, incident_rate=2.0))
    enc = RecordEncoder(fleet.topology)
    recs = [r for _ in range(ticks) for r in enc.records(fleet.step())]
    return [recs[i : i + per_batch] for i in range(0, len(recs), per_batch)]


@dataclass
class Model:
    """How to drive one model: build it, one batch step, and a scoring call that must not learn."""

    factory: Callable[[], Any]
    step: Callable[[Any, Any], list[float]]
    score: Callable[[Any, Any], list[float]]
    batches: list[Any]


# -- reliability -------------------------------------------------------------------------------
def _rel_step(m: ReliabilityDetector, batch: list[dict[str, Any]]) -> list[float]:
    scored, alerts = m.process(batch)
    return [s.score for s in scored] + [float(len(alerts))]


def _rel_score(m: ReliabilityDetector, batch: list[dict[str, Any]]) -> list[float]:
    return [m.score_one(x) for x in batch]


# -- bandwidth forecaster ----------------------------------------------------------------------
def _arrays(batch: list[dict[str, Any]]) -> tuple[Any, ...]:
    keys = [(r["node_id"], r.get("peer_id")) for r in batch]
    ts = np.array([r["timestamp"].timestamp() for r in batch])
    col = lambda f: np.array([np.nan if r.get(f) is None else r[f] for r in batch])  # noqa: E731
    return keys, ts, col("throughput_mbps"), col("rtt_ms"), col("jitter_ms"), col("packet_loss")


def _forecaster() -> OnlineForecaster:
    return OnlineForecaster(window=5, horizons=(1, 3), units=4, capacity=128, warmup_windows=300,
                            warmup_epochs=1, retrain_every=600, retrain_windows=300,
                            background=False, batch_size=64, seed=5)  # fmt: skip


def _fc_step(m: OnlineForecaster, batch: list[dict[str, Any]]) -> list[float]:
    out = m.process(*_arrays(batch))
    return out.value.ravel().tolist() + out.lower.ravel().tolist() + [float(out.version)]


def _latest_windows(m: OnlineForecaster | ConsensusDetector) -> np.ndarray:
    """The newest full window of every key the model holds (what it would score next)."""
    hist = m.history_
    rows = np.flatnonzero(hist.count >= m.window)
    return hist.windows(rows, hist.count[rows] - 1, m.window)


def _fc_score(m: OnlineForecaster, batch: list[dict[str, Any]]) -> list[float]:
    return m.model_.predict(_latest_windows(m)).ravel().tolist() if m.ready else []


# -- consensus autoencoder ---------------------------------------------------------------------
def _samples(batch: list[dict[str, Any]]) -> list[NodeSample]:
    seen: dict[tuple[str, float], NodeSample] = {}
    for r in batch:
        if r.get("consensus_latency_ms") is None:
            continue
        key = (r["node_id"], r["timestamp"].timestamp())
        seen.setdefault(key, NodeSample(r["node_id"], key[1], r["consensus_latency_ms"],
                                        r.get("cpu_util") or 0.0, r.get("rtt_ms") or 0.0))  # fmt: skip
    return list(seen.values())


def _autoencoder() -> ConsensusDetector:
    return ConsensusDetector(window=5, units=4, latent=2, warmup_windows=150, retrain_every=300,
                             background=False, batch_size=32, seed=5)  # fmt: skip


def _ae_step(m: ConsensusDetector, batch: list[dict[str, Any]]) -> list[float]:
    out = m.process(_samples(batch))
    return out.raw.tolist() + out.score.tolist() + [float(out.version)]


def _ae_score(m: ConsensusDetector, batch: list[dict[str, Any]]) -> list[float]:
    return m.model_.score(_latest_windows(m)).ravel().tolist() if m.ready else []


# -- compression policy (through the selector that learns in micro-batches) --------------------
def _selector() -> LinkSelector:
    teacher = TransferModel()
    rng = np.random.default_rng(0)
    c = rng.normal(size=(len(teacher.names), 8))
    doc = PortablePolicy(actions=teacher.table.actions, mean=np.zeros(8), std=np.ones(8),
                         layers=[Dense(c.T, np.zeros(len(c)), "softmax")], version="random",
                         metadata={"best_fixed": "zstd-3"})  # fmt: skip
    policy = CompressionPolicy.from_portable(doc, teacher, update_epochs=1, batch_size=64)
    return LinkSelector(policy, train_every=200, replay=400, seed=3)


def _states(batch: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    rows = [r for r in batch if all(r.get(f) is not None for f in STATE_FIELDS)]
    links = [f"{r['node_id']}>{r.get('peer_id')}" for r in rows]
    return links, np.array([[float(r[f]) for f in STATE_FIELDS] for r in rows])


def _sel_step(m: LinkSelector, batch: list[dict[str, Any]]) -> list[float]:
    links, states = _states(batch)
    return [float(d.action) for d in m.decide(links, states)] + [float(m.policy.updates_)]


def _sel_score(m: LinkSelector, batch: list[dict[str, Any]]) -> list[float]:
    return m.policy.predict_proba(_states(batch)[1]).ravel().tolist()


BATCHES = fleet_batches(150, 200)
MODELS = {
    "reliability": Model(
        lambda: ReliabilityDetector(seed=7, warmup=300, forest_refit_every=600, forest_trees=10),
        _rel_step, _rel_score, BATCHES,
    ),
    "forecaster": Model(_forecaster, _fc_step, _fc_score, BATCHES),
    "autoencoder": Model(_autoencoder, _ae_step, _ae_score, BATCHES),
    "compression": Model(_selector, _sel_step, _sel_score, BATCHES),
}  # fmt: skip


def half_way(m: Model) -> tuple[Any, int]:
    """A fresh model that has stepped through the first half of the batches, and that half."""
    model = m.factory()
    half = len(m.batches) // 2
    for b in m.batches[:half]:
        m.step(model, b)
    return model, half


def run(m: Model) -> tuple[Any, list[list[float]]]:
    model = m.factory()
    return model, [m.step(model, b) for b in m.batches]


@pytest.mark.parametrize("name", MODELS)
def test_seeded_determinism_and_finite_outputs(name: str) -> None:
    model, a = run(MODELS[name])
    _, b = run(MODELS[name])
    assert a == b
    flat = [x for out in a for x in out]
    assert len(flat) > len(a) and all(math.isfinite(x) for x in flat)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_mid_stream_gives_identical_later_outputs(name: str) -> None:
    m = MODELS[name]
    model, half = half_way(m)
    clone = pickle.loads(pickle.dumps(model))
    for b in m.batches[half:]:
        assert m.step(model, b) == m.step(clone, b)


@pytest.mark.parametrize("name", MODELS)
def test_input_not_mutated(name: str) -> None:
    m = MODELS[name]
    model = m.factory()
    for b in m.batches:
        before = copy.deepcopy(b)
        m.step(model, b)
        assert b == before


@pytest.mark.parametrize("name", MODELS)
def test_scoring_never_learns(name: str) -> None:
    m = MODELS[name]
    model, half = half_way(m)
    probe = m.batches[half]
    first = m.score(model, probe)
    assert first, f"{name}: nothing scored after half the stream"
    assert m.score(model, probe) == first  # scoring twice changes nothing
    clone = pickle.loads(pickle.dumps(model))
    assert m.step(model, m.batches[half + 1]) == m.step(clone, m.batches[half + 1])
