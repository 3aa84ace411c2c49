"""Compression selector without TensorFlow: codec table, transfer-time model, states,
evaluation, portable format, per-link selection."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from models.compression import (
    STATE_FIELDS,
    CodecTableError,
    PortableFormatError,
    TransferModel,
    features,
    load_codec_table,
    state_matrix,
)
from models.compression.codecs import CodecTable
from models.compression.evaluate import evaluate
from models.compression.portable import Dense, PortablePolicy
from models.compression.selector import LinkSelector
from producers.compression_states import fleet_states
from stream.schema import decode_telemetry

ROOT = Path(__file__).resolve().parents[2]
TABLE_PATH = ROOT / "models" / "compression" / "codecs.json"


@pytest.fixture(scope="module")
def table() -> CodecTable:
    return load_codec_table()


@pytest.fixture(scope="module")
def model(table: CodecTable) -> TransferModel:
    return TransferModel(table)


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return fleet_states(seed=11, nodes=20, hours=6.0, interval_s=300.0)


def state(**kw: float) -> list[float]:
    base = {
        "throughput_mbps": 1000.0,
        "rtt_ms": 20.0,
        "packet_loss": 1e-5,
        "amst_streams": 8,
        "cpu_util": 30.0,
        "hde_compression_ratio": 2.0,
        "hde_delta_hit_rate": 0.3,
    }
    base.update(kw)
    return [base[f] for f in STATE_FIELDS]


# -- codec table ------------------------------------------------------------------------------
def test_codec_table_is_the_committed_measurement(table: CodecTable):
    raw = json.loads(TABLE_PATH.read_text())
    assert raw["command"].startswith("python bench/measure_codecs.py")
    assert table.names == ("none", "lz4", "zstd-1", "zstd-3", "zstd-9", "zstd-19")
    assert table.classes == ("compressed", "memory", "text", "zero")
    assert (table.ratio[0] == 1).all() and (table.compress_s_per_mb[0] == 0).all()
    assert len(table.digest) == 12 and TABLE_PATH.stat().st_size < 20_000


def test_codec_table_orders_like_real_codecs(table: CodecTable):
    r, c = table.ratio, table.compress_s_per_mb
    text, mem, comp, zero = (
        table.classes.index(k) for k in ("text", "memory", "compressed", "zero")
    )
    lz4, z1, z3, z9, z19 = (
        table.index(n) for n in ("lz4", "zstd-1", "zstd-3", "zstd-9", "zstd-19")
    )
    assert r[lz4, text] < r[z1, text] <= r[z3, text] <= r[z9, text] <= r[z19, text]
    assert abs(r[z3, comp] - 1.0) < 0.02  # already compressed stays put
    assert r[z3, zero] > 10 * r[z3, mem] and r[z3, text] > r[z3, mem] > 1.2
    # slower the higher the level; lz4 fastest of all on memory pages (generous margins: noisy)
    assert c[lz4, mem] < c[z1, mem] and c[z3, mem] < c[z9, mem] < c[z19, mem]
    assert c[z19, mem] > 10 * c[z3, mem]


def test_codec_table_regenerates_with_real_codecs(table: CodecTable):
    spec = importlib.util.spec_from_file_location(
        "measure_codecs", ROOT / "bench" / "measure_codecs.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules["measure_codecs"] = bench
    spec.loader.exec_module(bench)
    small = CodecTable.from_dict(bench.build_table(0.25, 64, 1, 0, log=False))
    assert small.names == table.names and small.classes == table.classes
    # same generators and seed, a quarter of the payload: ratios agree closely
    np.testing.assert_allclose(small.ratio, table.ratio, rtol=0.1)


def test_codec_table_errors(table: CodecTable):
    with pytest.raises(CodecTableError, match="zstd-22"):
        table.index("zstd-22")
    data = json.loads(TABLE_PATH.read_text())
    del data["measurements"]["lz4"]["text"]
    with pytest.raises(CodecTableError, match="lz4/text"):
        CodecTable.from_dict(data)
    with pytest.raises(CodecTableError, match="missing"):
        CodecTable.from_dict({"actions": []})


# -- transfer-time model ----------------------------------------------------------------------
def test_mixture_reproduces_the_reference_ratio(model: TransferModel, table: CodecTable):
    ratios = np.array([1.0, 1.3, 2.0, 3.0, 4.0, 10.0, 40.0])
    s = np.array([state(hde_compression_ratio=r, hde_delta_hit_rate=0.0) for r in ratios])
    w = model.mixture(s)
    assert np.allclose(w.sum(axis=1), 1.0) and (w >= 0).all()
    ref = table.ratio[table.index("zstd-3")]
    np.testing.assert_allclose(1.0 / (w @ (1.0 / ref)), ratios, rtol=1e-9)
    hit = model.mixture(np.array([state(hde_delta_hit_rate=0.6)]))
    assert hit[0, table.classes.index("zero")] >= 0.6


def test_times_are_finite_positive_and_add_up(model: TransferModel, states: np.ndarray):
    edge = np.array(
        [
            state(throughput_mbps=0.0, amst_streams=0),
            state(packet_loss=1.0, cpu_util=100.0),
            state(rtt_ms=0.0, packet_loss=0.0, hde_compression_ratio=1000.0),
        ]
    )
    for s in (states, edge):
        t = model.times(s)
        assert t.shape == (len(s), len(model.names)) and np.isfinite(t).all() and (t > 0).all()
        np.testing.assert_allclose(model.times(s, parts=True).sum(axis=0), t)


def test_times_respond_to_the_link_and_the_host(model: TransferModel):
    names = model.names
    fast_busy = model.best(
        np.array(
            [
                state(
                    throughput_mbps=100_000,
                    cpu_util=95,
                    hde_delta_hit_rate=0,
                    hde_compression_ratio=1.1,
                )
            ]
        )
    )
    assert names[fast_busy[0]] == "none"
    slow_idle = model.best(
        np.array([state(throughput_mbps=2, cpu_util=5, hde_compression_ratio=4.0)])
    )
    assert names[slow_idle[0]] in ("zstd-9", "zstd-19")
    bw = model.times(np.array([state(throughput_mbps=b) for b in (10, 100, 1000)]))
    assert (np.diff(bw, axis=0) < 0).all()  # more bandwidth, less time, every action
    cpu = model.times(np.array([state(cpu_util=u) for u in (10, 50, 90)]), parts=True)[0]
    assert (np.diff(cpu[:, 1:], axis=0) > 0).all()  # busier sender, slower compression
    lossy = model.times(np.array([state(packet_loss=p) for p in (0, 1e-4, 1e-2)]))
    assert (np.diff(lossy, axis=0) > 0).all()


def test_transfer_model_does_not_mutate_and_accepts_one_state(model: TransferModel):
    s = np.array([state()])
    before = s.copy()
    one = model.times(state())
    assert np.array_equal(s, before) and one.shape == (1, len(model.names))
    with pytest.raises(ValueError, match="shape"):
        model.times(np.zeros((3, 4)))


# -- states -----------------------------------------------------------------------------------
def test_state_matrix_from_telemetry_and_dicts():
    rec = decode_telemetry(
        b'{"timestamp":"2026-01-05T10:00:00Z","node_id":"n-1","peer_id":"n-2",'
        b'"throughput_mbps":250.0,"rtt_ms":40.0,"cpu_util":20.0}'
    )
    s, ok = state_matrix([rec, {"node_id": "n-3"}, {"throughput_mbps": 5}])
    assert ok.tolist() == [True, False, True]
    assert s[0].tolist() == [250.0, 40.0, 0.0, 1.0, 20.0, 1.0, 0.0]
    x = features(s[ok])
    assert x.shape == (2, 8) and x.dtype == np.float32 and np.isfinite(x).all()
    assert state_matrix([])[0].shape == (0, len(STATE_FIELDS))


def test_fleet_states_are_seeded():
    a = fleet_states(seed=3, nodes=4, hours=0.5, interval_s=300)
    assert np.array_equal(a, fleet_states(seed=3, nodes=4, hours=0.5, interval_s=300))
    assert not np.array_equal(a, fleet_states(seed=4, nodes=4, hours=0.5, interval_s=300))


# -- evaluation -------------------------------------------------------------------------------
def test_evaluate_regret_and_gain():
    times = np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]])
    ev = evaluate(times, np.array([0, 0, 1]), ("a", "b"))
    assert ev.agreement == pytest.approx(2 / 3) and ev.disagreements == 1  # a tie agrees
    assert ev.regret_mean == pytest.approx(2.0) and ev.regret_max == pytest.approx(2.0)
    assert ev.best_fixed == "b" and ev.gain_total == pytest.approx(1 - 6 / 5)
    assert ev.oracle_gain_total == pytest.approx(1 - 4 / 5)
    with pytest.raises(ValueError):
        evaluate(times, np.array([0, 1]), ("a", "b"))


# -- portable format --------------------------------------------------------------------------
def portable_policy(model: TransferModel, seed: int = 0) -> PortablePolicy:
    rng = np.random.default_rng(seed)
    return PortablePolicy(
        actions=model.table.actions,
        mean=rng.normal(size=8),
        std=rng.uniform(0.5, 2.0, 8),
        layers=[Dense(rng.normal(size=(8, 16)), rng.normal(size=16), "relu"),
                Dense(rng.normal(size=(16, 6)), rng.normal(size=6), "softmax")],
        version="test",
        metadata={"note": "random"},
    )  # fmt: skip


def test_portable_json_round_trip_is_exact(model: TransferModel, states: np.ndarray):
    p = portable_policy(model)
    q = PortablePolicy.from_json(p.to_json())
    assert q.version == "test" and q.metadata == {"note": "random"} and q.names == model.names
    proba = p.predict_proba(states)
    assert np.array_equal(proba, q.predict_proba(states))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert p.n_params == 2 * 8 + 8 * 16 + 16 + 16 * 6 + 6


def test_portable_rejects_bad_documents(model: TransferModel):
    doc = portable_policy(model).to_dict()
    with pytest.raises(PortableFormatError, match="format"):
        PortablePolicy.from_dict({**doc, "format": "other/1"})
    with pytest.raises(PortableFormatError, match="features"):
        PortablePolicy.from_dict({**doc, "features": ["x"]})
    bad = json.loads(json.dumps(doc))
    bad["layers"][1]["kernel"]["shape"] = [16, 5]
    with pytest.raises(PortableFormatError):
        PortablePolicy.from_dict(bad)
    with pytest.raises(PortableFormatError, match="JSON"):
        PortablePolicy.from_json("{")
    with pytest.raises(PortableFormatError, match="softmax"):
        Dense(np.zeros((8, 6)), np.zeros(6), "tanh")


# -- per-link selection -----------------------------------------------------------------------
class ScriptedPolicy:
    """Picks the action scripted per call; counts micro-batch updates."""

    def __init__(self, transfer: TransferModel, picks: list[list[int]]) -> None:
        self.transfer, self.picks, self.updates, self.fitted = transfer, picks, 0, []
        self.names = transfer.names

    @property
    def version(self) -> str:
        return f"scripted-{self.updates}"

    def predict_proba(self, s: np.ndarray) -> np.ndarray:
        p = np.full((len(s), len(self.names)), 0.01)
        p[np.arange(len(s)), self.picks.pop(0)[: len(s)]] = 0.95  # a call may be a piece
        return p

    def partial_fit(self, s: np.ndarray) -> None:
        self.updates += 1
        self.fitted.append(len(s))


def test_selector_switches_only_when_it_pays(model: TransferModel, states: np.ndarray):
    t = model.times(states)
    ranked = np.sort(t, axis=1)
    # a state whose runner-up is within 2% of its best, and "none" far behind
    i = int(
        np.flatnonzero((ranked[:, 1] < ranked[:, 0] * 1.02) & (t[:, 0] > 1.5 * ranked[:, 0]))[0]
    )
    s = states[i : i + 1]
    best, runner_up = (int(a) for a in np.argsort(t[i])[:2])
    picks = [[0], [0], [best], [0], [runner_up]]
    sel = LinkSelector(ScriptedPolicy(model, list(picks)), train=False)
    steps = [[(d.link, d.action, d.previous) for d in sel.decide(["a>b"], s)] for _ in picks]
    assert steps == [
        [("a>b", 0, None)],  # the first pick of a link is published
        [],  # same pick: nothing new
        [("a>b", best, 0)],  # a much faster pick: switch
        [],  # a much slower pick: not worth it
        [],  # within 2% of the current one: hysteresis
    ]
    assert sel.current == {"a>b": best} and sel.switches == 2
    assert sel.agreement == pytest.approx(1 / 5)


def test_selector_learns_in_micro_batches_with_a_bounded_replay(
    model: TransferModel, states: np.ndarray
):
    n = 100
    batches = [states[i : i + n] for i in range(0, 10 * n, n)]
    policy = ScriptedPolicy(model, [[0] * n for _ in range(2 * len(batches))])
    sel = LinkSelector(policy, train_every=250, replay=300, seed=1)
    for b in batches:
        sel.decide([f"l{i}" for i in range(n)], b)
    assert policy.updates == 4  # exactly at 250, 500, 750 and 1,000 states (inside calls)
    assert policy.fitted == [250, 500, 500, 500]  # new states + as many replayed (up to 300)
    assert len(sel._reservoir) == 300 and sel._seen == 1000


def test_a_due_update_is_skipped_when_the_policy_already_agreed_on_its_states(
    model: TransferModel, states: np.ndarray
):
    """``update_below``: a micro-batch the policy already got right (agreement above it) is
    not learnt from, only remembered for replay; 1.0 updates every time."""
    n = 100
    best = model.times(states[: 5 * n]).argmin(axis=1)
    wrong = (best + 1) % len(model.names)
    # batch k: the teacher's pick for all but k of its states (agreement 1.0, 0.99, ... 0.96)
    picks = [[int(w) if i < k else int(b) for i, (b, w) in enumerate(zip(best[k * n : (k + 1) * n],
             wrong[k * n : (k + 1) * n], strict=True))] for k in range(5)]  # fmt: skip
    for below, updates in ((1.0, 5), (0.99, 4), (0.975, 2), (0.0, 0)):
        policy = ScriptedPolicy(model, [list(p) for p in picks])
        sel = LinkSelector(policy, train_every=n, replay=300, seed=1, update_below=below)
        for k in range(5):
            sel.decide([f"l{i}" for i in range(n)], states[k * n : (k + 1) * n])
        assert policy.updates == updates and sel.updates_skipped == 5 - updates
        assert sel._seen == 5 * n  # skipped states still join the replay reservoir
    with pytest.raises(ValueError, match="update_below must be in"):
        LinkSelector(policy, update_below=1.5)


def test_inline_decisions_do_not_depend_on_how_states_are_cut_into_calls(
    model: TransferModel, states: np.ndarray
):
    """An inline update runs exactly every ``train_every`` states, inside a call if need be,
    and a decision names the policy version that made it."""
    from models.compression.policy import CompressionPolicy

    base = CompressionPolicy(model, epochs=2, update_epochs=1, seed=3).fit(states[:400])
    text = base.to_portable().to_json()
    runs = []
    for per_call in (7, 100, 1000):
        from models.compression.portable import PortablePolicy

        policy = CompressionPolicy.from_portable(PortablePolicy.from_json(text), model,
                                                 update_epochs=1, seed=3)  # fmt: skip
        sel = LinkSelector(policy, train_every=120, replay=200, seed=1, min_improvement=0.0)
        links = [f"l{i % 13}" for i in range(len(states))]
        got = []
        for a in range(0, len(states), per_call):
            got += [(a + d.row, d.action, d.version, round(d.confidence, 12))
                    for d in sel.decide(links[a : a + per_call], states[a : a + per_call])]  # fmt: skip
        runs.append((got, policy.updates_, policy.version))
    assert runs[0][1] == len(states) // 120 and len({v for _r, _a, v, _c in runs[0][0]}) > 2
    assert runs[0] == runs[1] == runs[2]


class SlowPolicy(ScriptedPolicy):
    """A scripted policy whose update takes a while (as the first one, importing TensorFlow)."""

    def __init__(self, transfer: TransferModel, picks: list[list[int]], seconds: float) -> None:
        super().__init__(transfer, picks)
        self.seconds = seconds

    def partial_fit(self, s: np.ndarray) -> None:
        import time

        time.sleep(self.seconds)
        super().partial_fit(s)


def test_a_background_update_never_stalls_decisions_and_states_wait_for_the_next(
    model: TransferModel, states: np.ndarray
):
    import time

    n = 100
    batches = [states[i : i + n] for i in range(0, 6 * n, n)]
    policy = SlowPolicy(model, [[0] * n for _ in batches], seconds=1.0)
    sel = LinkSelector(policy, train_every=250, replay=300, seed=1, background=True)
    t0 = time.perf_counter()
    for b in batches:
        sel.decide([f"l{i}" for i in range(n)], b)
    assert time.perf_counter() - t0 < 0.5  # the 1 s update ran beside the decisions
    sel.finish(10)
    # one update ran (after 300 states); the 300 that became due meanwhile wait for the next
    assert policy.updates == 1 and policy.fitted == [300]
    assert sum(len(p) for p in sel._pending) == 300
    assert sel.update_errors == 0
