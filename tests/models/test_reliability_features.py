"""Per-node context features (:mod:`models.reliability.features`): rows that restore from old
checkpoints, and how a longer queue explains the link metrics it moves."""

from __future__ import annotations

import copy
import datetime as dt
import math
import pickle
import random
from typing import Any

import pytest

from models.reliability.features import QUEUE_EXPLAINS, FeatureRow, NodeContext
from models.reliability.kernel import QUEUE_MIN_ROWS
from tests.models.reference_features import NodeContext as Reference

# A FeatureRow pickled by the code of 91ff857, when the raw-unit baselines were a field (pending
# ticks hold rows, so every reliability checkpoint of that time has some): made with
# FeatureRow("n", "p", None, True, {"rtt_ms": 1.0}, {"rtt_ms": 5.0}, {"rtt_ms": 4.0}, False, 0.0, True)
ROW_91FF857 = (
    b"\x80\x04\x95\x05\x01\x00\x00\x00\x00\x00\x00\x8c\x1bmodels.reliability.features\x94\x8c\n"
    b"FeatureRow\x94\x93\x94)\x81\x94N}\x94(\x8c\x07node_id\x94\x8c\x01n\x94\x8c\x07peer_id\x94"
    b"\x8c\x01p\x94\x8c\nevent_time\x94N\x8c\x08new_tick\x94\x88\x8c\x01z\x94}\x94\x8c\x06rtt_ms"
    b"\x94G?\xf0\x00\x00\x00\x00\x00\x00s\x8c\x06values\x94}\x94h\rG@\x14\x00\x00\x00\x00\x00\x00"
    b"s\x8c\tbaselines\x94}\x94h\rG@\x10\x00\x00\x00\x00\x00\x00s\x8c\x10peer_unreachable\x94\x89"
    b"\x8c\x05trend\x94G\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x04warm\x94\x88\x8c\x07generic\x94]"
    b"\x94\x8c\x02_x\x94}\x94\x8c\x07_counts\x94}\x94u\x86\x94b."
)


def test_a_row_pickled_when_baselines_were_a_field_restores_with_them() -> None:
    row = pickle.loads(ROW_91FF857)
    assert row.baselines == {"rtt_ms": 4.0}  # an alert's explanation reads them
    assert (row.node_id, row.peer_id) == ("n", "p")
    assert (row.z, row.values) == ({"rtt_ms": 1.0}, {"rtt_ms": 5.0})
    assert (row.peer_unreachable, row.trend, row.warm, row.generic) == (False, 0.0, True, [])


def test_a_row_survives_a_pickle_round_trip() -> None:
    row = FeatureRow("n", "p", None, True, {"rtt_ms": 1.5}, {"rtt_ms": 5.0}, trend=2.0,
                     _means={"rtt_ms": 1.0}, _offsets={"rtt_ms": 0.01})  # fmt: skip
    back = pickle.loads(pickle.dumps(row))
    assert back == row
    assert back.baselines == row.baselines


T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def congested_link(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """One link whose congestion comes in episodes: the queue grows, and RTT, jitter and loss
    with it (a convex curve: a long queue adds more than its share), throughput drops."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        jam = i % 400 >= 385  # the last 15 samples of every 400, at one of 5 strengths
        cong = 0.3 + 0.7 * ((i // 400) % 5) / 4 if jam else 0.02 * rng.random()
        out.append(
            {
                "node_id": "a",
                "peer_id": "b",
                "timestamp": T0 + dt.timedelta(seconds=10 * i),
                "rtt_ms": 40.0 * (1 + 0.01 * rng.gauss(0, 1)) + 60.0 * cong**1.5,
                "jitter_ms": 1.0 * math.exp(0.2 * rng.gauss(0, 1)) + 10.0 * cong,
                "packet_loss": 1e-4 * math.exp(0.3 * rng.gauss(0, 1)) + 0.04 * cong**3,
                "queue_depth": round(2 + 60 * cong + rng.random() * 2),
                "throughput_mbps": 500.0 * (1 - 0.5 * cong) * (1 + 0.02 * rng.gauss(0, 1)),
            }
        )
    return out


def test_a_learned_coupling_explains_congestion_and_leaves_a_path_fault() -> None:
    recs = congested_link(3600)
    learned, fixed = NodeContext(), NodeContext(queue_explain=None)
    for r in recs:
        learned.learn_one(r)
        fixed.learn_one(r)
    slope = {name: learned.coupling(name)[0] for name in ("rtt_ms", "packet_loss")}
    slope["throughput_mbps"] = learned.coupling("throughput_mbps")[0]
    assert slope["rtt_ms"] > 0.5 and slope["packet_loss"] > 0.5  # they rise with the queue
    assert slope["throughput_mbps"] < 0  # it falls
    assert learned.coupling("rtt_ms")[1] >= QUEUE_MIN_ROWS

    jam = dict(congested_link(4000)[-1], timestamp=T0 + dt.timedelta(seconds=40_000))
    a, b = learned.score_one(jam).z, fixed.score_one(jam).z
    assert a["queue_depth"] == b["queue_depth"] == 3.0  # the queue is up, clipped as before
    for name in ("rtt_ms", "jitter_ms", "packet_loss"):
        assert 0.0 <= a[name] < b[name]  # explained further than the fixed rule does
    assert b["throughput_mbps"] <= a["throughput_mbps"] <= 0.0  # never past 0

    fault = dict(recs[-20], rtt_ms=400.0, packet_loss=0.05, timestamp=jam["timestamp"])
    a, b = learned.score_one(fault).z, fixed.score_one(fault).z
    assert a["queue_depth"] < 1.0  # the queue as usual: nothing explains the fault
    for name, least in (("rtt_ms", 10.0), ("packet_loss", 3.0)):
        assert a[name] > least
        assert a[name] == pytest.approx(b[name], rel=1e-3)  # (baselines learned a bit apart)


def test_a_context_from_before_the_coupling_keeps_the_fixed_rule() -> None:
    recs = congested_link(1600)
    old = Reference(queue_explain=None)  # the code of the time, state in dicts
    for r in recs:
        old.learn_one(r)
    state = old.__getstate__()
    del state["queue_explain"], state["couplings_"]  # what a checkpoint of 72ac972 holds
    restored = NodeContext.__new__(NodeContext)
    restored.__setstate__(state)
    assert restored.queue_explain is None
    for r in congested_link(2000)[1600:]:
        assert restored.learn_one(r).z == old.learn_one(r).z


def test_the_fixed_rule_takes_the_queue_off_latency_and_loss_until_a_coupling_is_learned() -> None:
    ctx = NodeContext(queue_explain=None)
    recs = congested_link(1200)
    for r in recs[:-1]:
        ctx.learn_one(r)
    unlearned = copy.deepcopy(ctx)  # the same baselines, no coupling learned yet
    unlearned.queue_explain = 3.0
    q_up = recs[-1]  # the last sample of an episode
    a, b = ctx.score_one(q_up), unlearned.score_one(q_up)
    assert a._queue is None and b._queue is not None
    q, before = b._queue
    assert q > 1.0 and before["rtt_ms"] > q
    for name in QUEUE_EXPLAINS:
        if name in before and before[name] > 0:
            assert a.z[name] == max(0.0, before[name] - q)
    assert a.z["throughput_mbps"] == before["throughput_mbps"]  # not in the fixed rule
    assert a.z == b.z


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_negative_margin_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="queue_explain"):
        NodeContext(queue_explain=bad)


def node_disk(n: int, level: float = 50.0) -> list[dict[str, Any]]:
    """A node whose disk use wobbles around ``level`` percent, every 10 s."""
    rng = random.Random(3)
    return [
        {"node_id": "a", "timestamp": T0 + dt.timedelta(seconds=10 * i),
         "disk_util": level + 0.3 * rng.gauss(0, 1), "cpu_util": 30.0 + rng.gauss(0, 1)}
        for i in range(n)
    ]  # fmt: skip


def test_a_disk_that_empties_is_no_evidence_and_one_that_fills_is() -> None:
    one, two = NodeContext(), NodeContext(rises_only=())
    assert one.rises_only == ("disk_util",)
    recs = node_disk(400)
    for r in recs:
        one.learn_one(r)
        two.learn_one(r)
    t = T0 + dt.timedelta(seconds=4000)
    cleaned = dict(recs[-1], disk_util=20.0, timestamp=t)
    assert one.score_one(cleaned).z["disk_util"] == 0.0
    assert two.score_one(cleaned).z["disk_util"] < -10.0
    full = dict(recs[-1], disk_util=80.0, timestamp=t)
    assert one.score_one(full).z["disk_util"] == two.score_one(full).z["disk_util"] > 10.0
    # the fall's rate of change counts 0 too, once the rate has a baseline
    later = [dict(r, disk_util=20.0, timestamp=t + dt.timedelta(seconds=10 * i))
             for i, r in enumerate(node_disk(10))]  # fmt: skip
    a = b = None
    for r in later:  # (within rate_lag samples of the fall)
        a, b = one.learn_one(r), two.learn_one(r)
    assert a is not None and b is not None
    assert a.z["disk_util_rate"] == 0.0 and b.z["disk_util_rate"] < -3.0
    # nor does the fall slow the node's baselines down (protection), as it did
    protected = [ctx.node_i_[ctx.node_index_["a"], 0] for ctx in (one, two)]
    assert protected == [0, len(later)]


def restored_without(ctx: NodeContext, name: str) -> NodeContext:
    """``ctx`` restored from a checkpoint taken before its attribute ``name`` existed."""
    state = ctx.__getstate__()
    del state[name]
    restored = NodeContext.__new__(NodeContext)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    return restored


def test_a_context_from_before_one_sided_metrics_stays_two_sided() -> None:
    old = NodeContext(rises_only=())
    for r in node_disk(300):
        old.learn_one(r)
    restored = restored_without(old, "rises_only")  # what a checkpoint of 0de9420 holds
    assert restored.rises_only == ()
    drop = dict(node_disk(1)[0], disk_util=20.0, timestamp=T0 + dt.timedelta(seconds=4000))
    assert restored.score_one(drop).z == old.score_one(drop).z


def test_rises_only_names_metrics_of_the_table() -> None:
    with pytest.raises(ValueError, match="disc_util"):
        NodeContext(rises_only=("disc_util",))


def node_consensus(n: int, start: int = 0, burst: range = range(0)) -> list[dict[str, Any]]:
    """One node's consensus latency around 5 ms, times 11 during the samples in ``burst``."""
    rng = random.Random(5 + start)
    return [
        {"node_id": "a", "timestamp": T0 + dt.timedelta(seconds=15 * (start + i)),
         "consensus_latency_ms": 5.0 * math.exp(0.15 * rng.gauss(0, 1))
         * (11.0 if start + i in burst else 1.0)}
        for i in range(n)
    ]  # fmt: skip


def test_robust_baselines_keep_a_short_burst_out_of_the_variance() -> None:
    plain, robust = NodeContext(protect_z=4.0), NodeContext(protect_z=4.0, clip_z=4.0)
    recs = node_consensus(400) + node_consensus(8, 400, burst=range(400, 408))
    recs += node_consensus(80, 408)  # 20 minutes after the burst
    for r in recs:
        plain.learn_one(r)
        robust.learn_one(r)
    sd = {name: math.sqrt(ctx.baseline("consensus_latency_ms", "a")[1])
          for name, ctx in (("plain", plain), ("robust", robust))}  # fmt: skip
    # the burst was protected for only a few samples: after that its z fell under protect_z
    # because the plain variance had grown, and it was learned at full weight
    assert sd["plain"] > 1.5 * sd["robust"]
    assert 0.1 < sd["robust"] < 0.3  # about the series' own width (0.15 in log units)
    # so a later degradation (x3) stands out against the robust baseline only
    worse = dict(recs[-1], consensus_latency_ms=15.0, timestamp=T0 + dt.timedelta(hours=3))
    z_plain = plain.score_one(worse).z["consensus_latency_ms"]
    z_robust = robust.score_one(worse).z["consensus_latency_ms"]
    assert z_robust > 4.0 > z_plain


def test_robust_baselines_change_nothing_until_a_sample_is_protected() -> None:
    plain, robust = NodeContext(), NodeContext(clip_z=4.0)
    for r in node_consensus(300):  # never beyond protect_z: nothing is winsorised
        assert plain.learn_one(r).z == robust.learn_one(r).z
    a, b = (ctx.baseline("consensus_latency_ms", "a") for ctx in (plain, robust))
    assert a == b and a[2] == 300


def test_a_context_from_before_robust_baselines_restores_plain() -> None:
    old = NodeContext()
    for r in node_consensus(50):
        old.learn_one(r)
    restored = restored_without(old, "clip_z")  # what a checkpoint of 71e0bc2 holds
    assert restored.clip_z is None and restored.clip2_ == 0.0
    kept = pickle.loads(pickle.dumps(NodeContext(clip_z=3.0)))
    assert kept.clip_z == 3.0 and kept.clip2_ == 9.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_clip_z_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="clip_z"):
        NodeContext(clip_z=bad)


def test_an_alert_can_name_a_rate_of_change_with_its_value_and_baseline() -> None:
    ctx = NodeContext()
    recs = node_disk(400)
    for r in recs:
        ctx.learn_one(r)
    t = T0 + dt.timedelta(seconds=4000)
    filling = [dict(r, disk_util=50.0 + 0.5 * i, timestamp=t + dt.timedelta(seconds=10 * i))
               for i, r in enumerate(node_disk(20))]  # fmt: skip
    rows = [ctx.learn_one(r) for r in filling]
    row = rows[-1]
    seen = recs + filling  # the rate compares with the value 36 samples (rate_lag) earlier
    assert row.values["disk_util_rate"] == seen[-1]["disk_util"] - seen[-1 - 36]["disk_util"]
    assert row.z["disk_util_rate"] > 4.0
    assert abs(row.baselines["disk_util_rate"]) < 1.0  # the normal change: about none
    assert row.baselines["disk_util"] == pytest.approx(50.0, abs=1.0)
