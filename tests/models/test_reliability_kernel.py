"""The compiled loop of the per-node context (:mod:`models.reliability.kernel`) against the plain
Python loop it replaced (``tests/models/reference_features.py``): the same features bit for
bit, whatever the batching, and checkpoints of the old dict-based state continue identically."""

from __future__ import annotations

import datetime as dt
import math
import pickle
import random
from typing import Any

import orjson
import pytest

from models.reliability.features import FeatureRow, NodeContext
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.schema import decode_telemetry
from tests.models.reference_features import NodeContext as Reference

#: Every field of a row the detector or an alert reads (and the private ones learning read).
FIELDS = ("node_id", "peer_id", "event_time", "new_tick", "z", "values", "peer_unreachable",
          "trend", "warm", "generic", "_x", "_means", "_offsets", "_queue")  # fmt: skip


def fleet_stream(steps: int = 900, seed: int = 4) -> list[Any]:
    """A small fleet with every kind of incident (crashes: restarts and unreachable peers),
    some of its records decoded into ``Telemetry`` as a consumer gets them, and an extra
    gauge and an extra cumulative counter (reset now and then) on one node."""
    config = FleetConfig(nodes=6, seed=seed, interval_s=5.0, incident_rate=8.0)
    fleet = Fleet(config)
    enc = RecordEncoder(fleet.topology)
    rng = random.Random(seed)
    total = 0.0
    out: list[Any] = []
    for k in range(steps):
        for rec in enc.records(fleet.step()):
            if rec["node_id"] == "n-001":
                total = 0.0 if rng.random() < 0.01 else total + rng.uniform(0, 50)
                rec["extra"] = {"load": rng.gauss(1.0, 0.1), "req_total": total}
            if k % 3 == 0:
                rec = decode_telemetry(
                    orjson.dumps({k: v for k, v in rec.items() if v is not None})
                )
            out.append(rec)
    return out


def same_rows(a: FeatureRow, b: Any) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x == y, (name, x, y)
        if isinstance(x, dict):
            assert list(x) == list(y), name  # in the same order (an alert's top metrics)


CONFIGS = {
    "default": {},
    "fixed queue rule": {"queue_explain": None},
    "robust, two-sided": {"clip_z": 4.0, "rises_only": (), "protect_z": 4.0},
    "table only": {"generic": False, "trend_min_z": 1.0},
}


@pytest.mark.parametrize("config", CONFIGS)
def test_the_compiled_loop_gives_the_python_loops_features_bit_for_bit(config: str) -> None:
    records = fleet_stream()
    ref, ctx = Reference(**CONFIGS[config]), NodeContext(**CONFIGS[config])
    rng = random.Random(1)
    i = 0
    while i < len(records):
        n = rng.choice([1, 2, 7, 50, 400])  # one record, a poll, a file batch
        batch = ctx.learn_many(records[i : i + n])
        for j in range(len(batch)):
            same_rows(batch.row(j), ref.learn_one(records[i + j]))
        i += n
    for rec in records[-50:]:  # scoring alone learns nothing, on either side
        same_rows(ctx.score_one(rec), ref.score_one(rec))
    assert ctx.learn_one(records[-1]).z == ref.learn_one(records[-1]).z


def test_the_stream_covers_what_the_loop_does() -> None:
    """(So the comparison above cannot pass on a stream that never reaches a branch.)"""
    ref = Reference()
    rows = [ref.learn_one(r) for r in fleet_stream()]
    assert sum(r.peer_unreachable for r in rows) > 10
    assert sum(r.z.get("restart", 0.0) > 0 for r in rows) > 3
    assert sum(r._queue is not None for r in rows) > 10
    assert any("extra.req_total_per_s" in r.values for r in rows)
    assert sum(r.trend > 1.0 for r in rows) > 10
    assert sum("mem_util_rate" in r.z for r in rows) > 100
    assert max(c.n for c in ref.couplings_.values()) >= 20  # a coupling is learned and used


def test_a_checkpoint_of_the_dict_based_state_continues_identically() -> None:
    records = fleet_stream(steps=500)
    half = len(records) // 2
    ref = Reference()
    for r in records[:half]:
        ref.learn_one(r)
    # pickled as the code of the time did, under its module's name (protocol 2 names
    # classes in text)
    old = pickle.dumps(ref, protocol=2).replace(
        b"ctests.models.reference_features\n", b"cmodels.reliability.features\n"
    )
    assert b"reference_features" not in old
    ctx = pickle.loads(old)
    assert type(ctx) is NodeContext and len(ctx.link_index_) == len(ref.links_)
    batch = ctx.learn_many(records[half:])
    for j, rec in enumerate(records[half:]):
        same_rows(batch.row(j), ref.learn_one(rec))
    again = pickle.loads(pickle.dumps(ctx))  # and the new state pickles as it is
    rec = dict(records[-1], timestamp=records[-1]["timestamp"] + dt.timedelta(seconds=5))
    same_rows(again.learn_one(rec), ctx.learn_one(rec))


def test_scoring_a_record_of_a_new_node_keeps_no_state() -> None:
    ctx = NodeContext()
    records = fleet_stream(steps=50)
    ctx.learn_many(records)
    before = pickle.dumps(ctx)
    stranger = dict(records[-1], node_id="n-999", peer_id="n-998")
    row = ctx.score_one(stranger)
    assert row.warm is False and all(v == 0.0 for v in row.z.values())
    assert pickle.dumps(ctx) == before


def test_non_finite_values_count_as_absent() -> None:
    ctx, ref = NodeContext(), Reference()
    t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for i in range(60):
        rec = {"node_id": "a", "peer_id": "b", "timestamp": t0 + dt.timedelta(seconds=5 * i),
               "rtt_ms": 10.0 + i % 3, "extra": {"m": 1.0 + i % 2}}  # fmt: skip
        if i % 7 == 0:
            rec["rtt_ms"] = math.inf
            rec["extra"] = {"m": math.nan}
        same_rows(ctx.learn_one(rec), ref.learn_one(rec))
