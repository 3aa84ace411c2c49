"""Generic features of the reliability detector: every numeric field and extra metric, counters
as per-second rates (resets included), a fleet-wide feature set that grows deterministically
and pickles, and no crash on any valid record."""

from __future__ import annotations

import datetime as dt
import math
import pickle
import random
from typing import Any

import numpy as np
import orjson
import pytest

from models.reliability import NodeContext, ReliabilityDetector
from models.reliability.generic import counter_rate
from stream.schema import decode_telemetry
from tests.models.reference_features import NodeContext as Reference

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def rec(i: int, node: str = "n-1", step_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    return {"timestamp": T0 + dt.timedelta(seconds=step_s * i), "node_id": node, **fields}


#: The context's parameters a detector sets.
CONTEXT_PARAMS = ("span", "protect_z", "trend_lag", "trend_k", "trend_min_z", "queue_explain",
                  "rises_only", "clip_z")  # fmt: skip


def small_detector(**kw: Any) -> ReliabilityDetector:
    params: dict[str, Any] = dict(
        seed=3, warmup=100, forest_refit_every=300, forest_trees=10, hst_window=50, step=100
    )
    params.update(kw)
    return ReliabilityDetector(**params)


def extra_stream(n: int = 900, nodes: int = 3, seed: int = 0) -> list[Any]:
    """Validated records with extra metrics only (a gauge per node, a shared one, a counter)."""
    rng = random.Random(seed)
    out, totals = [], [0.0] * nodes
    for i in range(n // nodes):
        for k in range(nodes):
            totals[k] = 0.0 if (k == 1 and i == 150) else totals[k] + rng.randint(50, 150)
            extra = {
                "load": 0.5 + 0.05 * rng.gauss(0, 1),
                f"own{k}": rng.random(),
                "req_total": totals[k],
            }
            if i > 200 and k == 2:
                extra["late.metric"] = -3.0 + rng.random()  # a metric that appears later
            out.append(decode_telemetry(orjson.dumps(rec(i, node=f"n-{k}", extra=extra))))
    return out


# -- counters ------------------------------------------------------------------------------------
def test_counter_rule():
    assert counter_rate(None, 10.0, 5.0, "cumulative") is None  # first sample: no rate
    assert counter_rate((0.0, 100.0), 10.0, 160.0, "cumulative") == 6.0
    assert counter_rate((0.0, 100.0), 10.0, 40.0, "cumulative") == 4.0  # reset: counts from 0
    assert counter_rate((0.0, 100.0), 10.0, 0.0, "cumulative") == 0.0
    assert counter_rate((10.0, 100.0), 10.0, 160.0, "cumulative") is None  # same time
    assert counter_rate((20.0, 100.0), 10.0, 160.0, "cumulative") is None  # out of order
    assert counter_rate((0.0, 7.0), 5.0, 500.0, "delta") == 100.0  # an amount per interval


def test_cumulative_extra_counters_become_rates_and_a_reset_is_never_negative():
    ctx = NodeContext()
    totals = [100, 160, 220, 30, 90, 90]  # reset after 220
    rows = [ctx.learn_one(rec(i, extra={"req_total": float(v)})) for i, v in enumerate(totals)]
    rates = [r.values.get("extra.req_total_per_s") for r in rows]
    assert rates == [None, 6.0, 6.0, 3.0, 6.0, 0.0]
    assert all(r.z["extra.req_total_per_s"] == 0.0 for r in rows)  # baselines still warming up
    assert rows[0].generic == ["extra.req_total_per_s"]


def test_bytes_become_per_second_rates_when_no_throughput_measures_them():
    ctx = NodeContext()
    rows = [ctx.learn_one(rec(i, step_s=5.0, bytes_tx=5000 * (1 + i % 2))) for i in range(4)]
    assert [r.values.get("bytes_tx_per_s") for r in rows] == [None, 2000.0, 1000.0, 2000.0]
    # with throughput present, bytes (throughput x interval) would count the same evidence twice
    row = NodeContext().learn_one(rec(0, bytes_tx=5000, throughput_mbps=4.0))
    assert "bytes_tx_per_s" not in row.z and row.generic == []


def test_counter_series_are_per_link_and_duplicates_give_no_rate():
    ctx = NodeContext()
    a = ctx.learn_one(rec(0, peer_id="a", extra={"x_total": 10.0}))
    b = ctx.learn_one(rec(0, peer_id="b", extra={"x_total": 500.0}))
    a2 = ctx.learn_one(rec(1, peer_id="a", extra={"x_total": 30.0}))
    dup = ctx.learn_one(rec(1, peer_id="a", extra={"x_total": 40.0}))
    b2 = ctx.learn_one(rec(1, peer_id="b", extra={"x_total": 520.0}))
    assert [r.values.get("extra.x_total_per_s") for r in (a, b, a2, dup, b2)] == [
        None,
        None,
        2.0,
        None,
        2.0,
    ]


# -- no crash on valid records -------------------------------------------------------------------
EDGE = [
    {},  # no metric at all
    {"rtt_ms": 0.0, "packet_loss": 0.0, "bytes_tx": 0, "bytes_rx": 0, "cpu_util": 0.0},
    {"rtt_ms": 60_000.0, "bytes_tx": 10**18, "throughput_mbps": 1_000_000.0, "queue_depth": 10**9},
    {"extra": {"neg": -1e300, "pos": 1.7e308, "zero": 0.0, "tiny": -5e-324}},
    {"extra": {"c_total": 1.7e308}},
    {"extra": {"c_total": 0.0}},
    {"uptime_s": 0.0, "amst_streams": 0, "peer_id": "p"},
    {"extra": {f"m{i:02d}": float(i) for i in range(64)}},
]


@pytest.mark.parametrize("generic", [True, False])
def test_edge_case_valid_records_never_crash_and_scores_stay_finite(generic: bool):
    det = small_detector(generic_metrics=generic)
    rng = random.Random(1)
    records = []
    for i in range(600):
        fields = dict(rng.choice(EDGE)) if i % 3 else {"extra": {"const": 7.0}, "rtt_ms": 5.0}
        records.append(
            decode_telemetry(orjson.dumps(rec(i, node=f"n-{i % 4}", **fields), default=str))
        )
    scored, alerts = det.process(records)
    alerts += det.flush()
    assert len(scored) == 600 and all(
        math.isfinite(s.score) and 0.0 <= s.score <= 1.0 for s in scored
    )
    for a in alerts:  # what an alert says stays finite too
        assert all(math.isfinite(m.value) and math.isfinite(m.baseline) for m in a.top_metrics)


def test_a_constant_extra_series_is_scored_without_error():
    det = small_detector()
    scored, _ = det.process([rec(i, extra={"flat": 3.0}) for i in range(400)])
    assert all(math.isfinite(s.score) for s in scored)


def test_a_constant_extra_series_is_normal():
    # every component's score is one tied value: mid-rank calibration makes it typical (0.5)
    det = small_detector()
    scored, _ = det.process([rec(i, extra={"flat": 3.0}) for i in range(400)])
    assert {s.flagged for s in scored[200:]} == {False}
    assert max(s.score for s in scored[200:]) < 0.9


def test_a_negative_value_on_a_log_scaled_field_does_not_crash_the_model():
    # validation refuses it on the wire; a caller handing the model a dict must not crash it
    ctx = NodeContext()
    for i in range(30):
        ctx.learn_one(rec(i, rtt_ms=10.0 + i % 3))
    row = ctx.score_one(rec(31, rtt_ms=-5.0, packet_loss=-0.1))
    assert math.isfinite(row.z["rtt_ms"]) and row.values["rtt_ms"] == -5.0
    det = small_detector()
    scored, _ = det.process([rec(i, rtt_ms=-1.0 if i % 7 == 0 else 3.0) for i in range(300)])
    assert all(math.isfinite(s.score) for s in scored)


def test_negative_extra_values_are_ordinary():
    det = small_detector()
    scored, _ = det.process([rec(i, extra={"temp_c": -20.0 + (i % 5)}) for i in range(300)])
    assert all(math.isfinite(s.score) for s in scored)
    assert "extra.temp_c" in det.feature_names_


# -- the feature set ----------------------------------------------------------------------------
def test_the_feature_set_grows_in_stream_order_and_the_forest_widens():
    det = small_detector()
    core = det.feature_names_
    records = extra_stream()
    det.process(records)
    added = det.feature_names_[len(core) :]
    assert det.feature_names_[: len(core)] == core  # the tuned columns keep their place
    assert added[:5] == (
        "extra.load",
        "extra.own0",
        "extra.req_total_per_s",
        "extra.own1",
        "extra.own2",
    )
    assert added[5:] == ("extra.late.metric",)
    assert det.forest_.n_features == len(det.feature_names_)
    assert det.forest_.forest_ is not None and det.forest_.forest_.n_features_in_ == len(
        det.feature_names_
    )
    assert det.hst_.features == det.feature_names_


def test_max_features_caps_the_columns():
    det = small_detector(max_features=len(small_detector().feature_names_) + 2)
    det.process(extra_stream(n=300))
    assert len(det.feature_names_) == det.max_features and det.n_features_dropped_ > 0


def test_generic_metrics_off_reads_the_tuned_table_alone():
    det = small_detector(generic_metrics=False)
    names = det.feature_names_
    det.process(extra_stream(n=300))
    assert det.feature_names_ == names
    assert det.context_.score_one(extra_stream(n=3)[0]).z == {}  # extra metrics not read


def test_scores_do_not_depend_on_the_batching():
    records = extra_stream()
    a, b = small_detector(), small_detector()
    whole, _ = a.process(records)
    parts = []
    for start in range(0, len(records), 37):
        parts += b.process(records[start : start + 37])[0]
    assert whole == parts and a.feature_names_ == b.feature_names_


def test_state_pickles_mid_stream_and_restores_identically():
    records = extra_stream()
    det = small_detector()
    det.process(records[:450])
    restored = pickle.loads(pickle.dumps(det))
    assert restored.feature_names_ == det.feature_names_
    a, b = restored.context_, det.context_
    links = len(b.link_index_)
    assert a.link_index_ == b.link_index_ and links > 0
    np.testing.assert_array_equal(a.counter_[:links], b.counter_[:links])  # (NaN: none yet)
    out_a = det.process(records[450:])
    out_b = restored.process(records[450:])
    assert out_a[0] == out_b[0]
    assert [a.alert_id for a in out_a[1]] == [b.alert_id for b in out_b[1]]
    np.testing.assert_array_equal(det.forest_.buf_, restored.forest_.buf_)


def test_a_checkpoint_with_pending_rows_one_by_one_restores_as_it_was():
    """Before 2026-12-07 the rows the forest and the residual learn at the next step were
    pending one by one (a row, or a key and a row); now they pend as blocks."""
    records = extra_stream()
    det = small_detector()
    det.process(records[:450])  # (step 100: 50 rows pending)
    state = pickle.loads(pickle.dumps(det)).__dict__
    assert state["forest_pending_"] and state["residual_pending_"]
    state["forest_pending_"] = [row for block in state["forest_pending_"] for row in block]
    state["residual_pending_"] = [
        (k, row) for keys, block in state["residual_pending_"] for k, row in zip(keys, block, strict=True)
    ]
    old = ReliabilityDetector.__new__(ReliabilityDetector)
    old.__setstate__(state)
    out_new, out_old = det.process(records[450:]), old.process(records[450:])
    assert out_new[0] == out_old[0]
    assert [a.alert_id for a in out_new[1]] == [a.alert_id for a in out_old[1]]
    np.testing.assert_array_equal(det.forest_.buf_, old.forest_.buf_)


def test_a_checkpoint_from_before_generic_features_restores_as_it_was():
    det = small_detector(generic_metrics=False)
    det.process(extra_stream(n=150))
    state = pickle.loads(pickle.dumps(det)).__dict__
    # the context as the code of the time kept it: baselines in dicts, no generic features
    made = state["context_"]
    reference = Reference(**{k: getattr(made, k) for k in CONTEXT_PARAMS}, generic=False)
    for r in extra_stream(n=150):
        reference.learn_one(r)
    ctx_state = reference.__getstate__()
    for key in ("generic_metrics", "max_features", "n_features_dropped_", "feature_index_"):
        del state[key]
    for key in ("generic", "generic_fields_", "counters_"):
        del ctx_state[key]
    ctx = NodeContext.__new__(NodeContext)
    ctx.__setstate__(ctx_state)
    state["context_"] = ctx
    old = ReliabilityDetector.__new__(ReliabilityDetector)
    old.__setstate__(state)
    assert old.generic_metrics is False and ctx.generic is False
    assert old.process(extra_stream(n=30))[0] == det.process(extra_stream(n=30))[0]


def test_learned_history_scores_live_records_at_once_and_carries_no_incident():
    rng = random.Random(1)
    det = small_detector()
    history = [rec(i, extra={"load": 0.5 + 0.01 * rng.gauss(0, 1)}) for i in range(600)]
    history += [rec(600 + i, extra={"load": 9.0}) for i in range(20)]  # ends inside an incident
    det.process(history)
    assert det.tracker_.open_incidents()
    kept = pickle.loads(pickle.dumps(det))  # the same, without end_history
    det.end_history()
    assert not det.tracker_.open_incidents() and det.watermark_ is None
    # live, a day later: scored from the first record (the warm-up was the history), no node
    # is overdue for the gap, and nothing refers to the history's incident
    live = [rec(9000 + i, extra={"load": 0.5 + 0.01 * rng.gauss(0, 1)}) for i in range(50)]
    scored, alerts = det.process(live)
    assert all(s.score > 0 for s in scored)
    assert not [a for a in alerts if a.category == "crash" or a.opened_at < live[0]["timestamp"]]
    _, carried = kept.process(live)
    assert [a for a in carried if a.opened_at < live[0]["timestamp"]], "the check cannot fail"
