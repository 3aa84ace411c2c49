"""models.autoencoder: node samples, robust baseline, threshold, the LSTM autoencoder, detector."""

from __future__ import annotations

import pickle

import numpy as np

from models.autoencoder.detector import ConsensusDetector
from models.autoencoder.features import NodeBaseline, NodeSample, NodeSampler
from models.autoencoder.model import LSTMAutoencoder
from models.autoencoder.threshold import AdaptiveThreshold


def test_sampler_folds_links_and_skips_replays() -> None:
    ns = NodeSampler()
    for ts, rtt in ((0.0, 3.0), (0.0, 1.0), (1.0, 2.0), (0.0, 0.1), (2.0, 2.0)):
        ns.add("n", ts, cons=5.0, cpu=10.0, rtt=rtt)
    out = ns.pop()
    assert [(s.ts, s.rtt) for s in out] == [(0.0, 1.0), (1.0, 2.0)]


def test_baseline_does_not_absorb_a_large_shift() -> None:
    b = NodeBaseline(alpha=0.05)
    rows = np.zeros(400, dtype=np.int64)
    cons = np.r_[np.full(100, 5.0), np.full(300, 50.0)]  # x10 for 300 samples
    f = b.features(rows, cons, np.zeros(400), np.zeros(400), frozen=np.zeros(400, bool))
    assert f[-1, 0] > 0.9 * np.log(10.0)  # still far above the baseline at the end


def test_threshold_shift_from_a_sub_threshold_tail_is_bounded() -> None:
    rng = np.random.default_rng(0)
    th = AdaptiveThreshold(k=3.0, size=5000, min_samples=100)
    th.update(np.exp(rng.standard_normal(5000)))
    values = []
    for _ in range(60):  # 10% of scores just under the threshold, round after round
        th.update(np.r_[np.exp(rng.standard_normal(900)), np.full(100, 0.99 * th.value)])
        values.append(th.value)
    assert values[-1] < 1.1 * values[19]  # no ratchet: it settles instead of growing


def _node_windows(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.01, (n, 20)), axis=1) + rng.normal(0, 0.1, (n, 1))
    x = np.stack([walk + shift, rng.normal(0, 0.1, (n, 20)), np.full((n, 20), 0.3)], axis=2)
    return x.astype(np.float32)


def test_autoencoder_scores_shifted_windows_higher_and_pickles() -> None:
    ae = LSTMAutoencoder(window=20, n_features=3, units=8, latent=3, epochs=4, trim=2, seed=0)
    ae.fit(_node_windows(1500, 0))
    normal, shifted = ae.score(_node_windows(300, 1)), ae.score(_node_windows(300, 2, shift=0.6))
    assert np.median(shifted) > 5 * np.median(normal)
    again = pickle.loads(pickle.dumps(ae))
    np.testing.assert_allclose(
        again.score(_node_windows(10, 3)), ae.score(_node_windows(10, 3)), rtol=1e-5
    )


def _samples(nodes: int, ticks: int, seed: int, bad: tuple[int, int, int] | None):
    rng = np.random.default_rng(seed)
    walk = np.zeros(nodes)
    for t in range(ticks):
        walk = 0.98 * walk + rng.normal(0, 0.02, nodes)
        for n in range(nodes):
            mult = 3.0 if bad and n == bad[0] and bad[1] <= t < bad[2] else 1.0
            cons = 5.0 * np.exp(walk[n]) * mult
            yield NodeSample(f"n{n}", float(t), cons, 30.0, 1.0)


def test_detector_flags_a_degradation_not_normal_nodes() -> None:
    d = ConsensusDetector(
        window=10,
        units=8,
        latent=3,
        warmup_windows=1500,
        warmup_epochs=4,
        retrain_every=2000,
        background=False,
        batch_size=32,
        seed=0,
    )
    samples = list(_samples(8, 600, seed=0, bad=(3, 450, 520)))
    flagged: dict[str, int] = {}
    n_scored = 0
    for i in range(0, len(samples), 80):
        chunk = samples[i : i + 80]
        out = d.process(chunk)
        n_scored += len(out.index)
        for k, f in zip(out.index.tolist(), out.flagged.tolist(), strict=True):
            if f and chunk[k].ts >= 400:
                flagged[chunk[k].node] = flagged.get(chunk[k].node, 0) + 1
    assert d.version_ >= 2 and n_scored > 2000
    assert flagged.get("n3", 0) >= 30  # most of the 70 degraded samples
    assert sum(v for k, v in flagged.items() if k != "n3") <= 0.05 * 7 * 200
    assert min(out.score) >= 0.0 and max(out.score) < 1.0


def test_a_background_warm_up_fit_never_stalls_process_and_is_swapped_in_later() -> None:
    import time

    d = ConsensusDetector(window=10, units=8, latent=3, warmup_windows=1500, warmup_epochs=4,
                          retrain_every=10**9, background=True, batch_size=32, seed=0)  # fmt: skip
    samples = list(_samples(8, 600, seed=0, bad=None))
    started = None
    for i in range(0, len(samples), 80):
        out = d.process(samples[i : i + 80])
        if any("warm-up fit started" in e for e in out.events):
            started = i
            break
    assert started is not None, "the warm-up fit never started"
    assert not d.ready and len(out.index) == 0  # nothing scored: the fit runs beside
    assert d.trainer_.busy or d.trainer_.pending
    t0 = time.perf_counter()
    d.process(samples[started + 80 : started + 160])  # the stream goes on meanwhile
    assert time.perf_counter() - t0 < 1.0 or d.ready
    d.trainer_.join(120)
    out = d.process(samples[started + 160 : started + 240])
    assert d.ready and d.version_ == 1 and len(out.index) > 0
    assert any(e.startswith("warm-up fit done") for e in out.events)
    assert d.retrains_[0]["reason"] == "warm-up"



def test_a_fleet_too_small_for_the_warm_up_is_fitted_once_its_buffers_are_full() -> None:
    # 6 nodes x (100 - 10) windows can never reach 2,000: such a fleet was never fitted (on
    # the simulator, 12- and 10-node fleets had no consensus alerts at all)
    d = ConsensusDetector(window=10, units=8, latent=3, warmup_windows=2000, warmup_epochs=2,
                          capacity=100, retrain_every=10**9, background=False, batch_size=32,
                          step_samples=50, seed=0)  # fmt: skip
    samples = list(_samples(6, 160, seed=1, bad=None))
    fitted_at = None
    for i in range(0, len(samples), 60):
        d.process(samples[i : i + 60])
        if d.ready and fitted_at is None:
            fitted_at = i + 60
    assert d.version_ == 1
    assert fitted_at is not None and 6 * 100 <= fitted_at <= 6 * 100 + 2 * 60  # buffers full
    # a fleet that can hold warmup_windows still waits for them
    big = ConsensusDetector(window=10, units=8, latent=3, warmup_windows=2000, capacity=1000,
                            background=False, step_samples=50, seed=0)  # fmt: skip
    big.process(list(_samples(6, 160, seed=1, bad=None)))
    assert not big.ready


def test_volatility_is_measured_in_each_nodes_own_units_and_ignores_one_spike() -> None:
    from models.autoencoder.volatility import NodeVolatility

    rng = np.random.default_rng(0)
    v = NodeVolatility(window=12, ratio=2.5, min_spread=0.0, warm=30)
    spread = np.array([0.005, 0.02, 0.05, 0.1])  # each node's own sample-to-sample wander
    rows = np.tile(np.arange(4), 3000)  # 4 nodes interleaved
    x = np.cumsum(rng.standard_normal((3000, 4)) * spread, axis=0).ravel()
    ratios = v.update(rows, x, np.zeros(len(rows), bool))
    assert (ratios < 2.5).mean() > 0.999  # a random walk of any size: (almost) never flagged
    np.testing.assert_allclose(v.normal_[:4], spread, rtol=0.15)
    # the quiet node turns erratic at 5x its own wander for 60 samples: flagged, then let go
    t = np.arange(200)
    steps = rng.standard_normal(200) * np.where((t >= 50) & (t < 110), 0.025, 0.005)
    r = v.update(np.zeros(200, np.int64), x[-4] + np.cumsum(steps), np.zeros(200, bool))
    assert (r[62:110] >= 2.5).mean() > 0.8 and (r[:50] < 2.5).all() and (r[125:] < 2.5).all()
    # one huge spike moves two changes of twelve: the median barely notices
    spike = np.r_[np.zeros(15), 5.0, np.zeros(15)] + x[-3]
    assert (v.update(np.full(31, 1), spike, np.zeros(31, bool)) < 2.5).all()
    # with a floor, the quiet node's 5x jitter (0.025, under 0.05) no longer flags; the same
    # rise on a node whose changes reach the floor does
    floor = NodeVolatility(window=12, ratio=2.5, min_spread=0.05, warm=30)
    base = np.cumsum(rng.standard_normal(400) * 0.005)
    quiet = base[-1] + np.cumsum(rng.standard_normal(60) * 0.025)
    loud = base[-1] + np.cumsum(rng.standard_normal(60) * 0.1)
    assert (floor.update(np.zeros(400, np.int64), base, np.zeros(400, bool)) < 2.5).all()
    assert (floor.update(np.zeros(60, np.int64), quiet, np.zeros(60, bool)) < 2.5).all()
    assert (floor.update(np.ones(400, np.int64), base, np.zeros(400, bool)) < 2.5).all()
    assert (floor.update(np.ones(60, np.int64), loud, np.zeros(60, bool))[12:] >= 2.5).mean() > 0.8


def test_the_detectors_volatility_rule_flags_an_erratic_rise_the_window_error_misses() -> None:
    kw = dict(window=10, units=8, latent=3, warmup_windows=1500, warmup_epochs=4,
              retrain_every=10**9, background=False, batch_size=32, seed=0)  # fmt: skip
    rng = np.random.default_rng(1)
    walk = np.zeros(8)
    samples = []
    for t in range(700):
        walk = 0.99 * walk + rng.normal(0, 0.01, 8)  # a slow wander, sd 0.07
        for n in range(8):
            bad = n == 5 and 500 <= t < 620  # x1.15, jumping about 5x its normal wander
            mult = 1.15 * np.exp(rng.normal(0, 0.05)) if bad else 1.0
            samples.append(NodeSample(f"n{n}", float(t), 5.0 * mult * np.exp(walk[n]), 30.0, 1.0))
    hits: dict[bool, dict[bool, int]] = {}
    for on in (False, True):
        det = ConsensusDetector(volatility_ratio=2.5 if on else 0.0, **kw)
        count = {True: 0, False: 0}
        for i in range(0, len(samples), 80):
            chunk = samples[i : i + 80]
            out = det.process(chunk)
            assert (out.flagged == (out.score >= 0.5)).all()  # the score says the flag
            for k, f in zip(out.index.tolist(), out.flagged.tolist(), strict=True):
                if f:
                    count[chunk[k].node == "n5" and 500 <= chunk[k].ts < 620] += 1
        hits[on] = count
    assert hits[True][True] >= 50 and hits[True][True] > 2 * hits[False][True]
    assert hits[True][False] <= hits[False][False] + 20
    restored = pickle.loads(pickle.dumps(det))
    assert restored.volatility_ is not None and restored.volatility_.ratio == 2.5


def test_a_congested_fastest_link_is_not_a_consensus_incident() -> None:
    # the fastest link's RTT goes from 0.3 to 3 ms for 80 samples; consensus rises by exactly the
    # two round trips (its processing share is unchanged): context for the model, not an incident
    kw = dict(window=10, units=8, latent=3, warmup_windows=1500, warmup_epochs=4,
              retrain_every=10**9, background=False, batch_size=32, volatility_ratio=0.0,
              seed=0)  # fmt: skip
    rng = np.random.default_rng(2)
    walk = np.zeros(8)
    samples = []
    for t in range(700):
        walk = 0.99 * walk + rng.normal(0, 0.01, 8)
        for n in range(8):
            rtt = (3.0 if n == 2 and 500 <= t < 580 else 0.3) * np.exp(rng.normal(0, 0.05))
            cons = 5.0 * np.exp(walk[n]) + 2.0 * rtt
            samples.append(NodeSample(f"n{n}", float(t), cons, 30.0, rtt))
    flagged = {}
    for weights in ((4.0, 1.0, 1.0), None):
        det = ConsensusDetector(**kw) if weights is None else ConsensusDetector(
            feature_weights=weights, **kw)  # fmt: skip
        n2 = 0
        for i in range(0, len(samples), 80):
            chunk = samples[i : i + 80]
            out = det.process(chunk)
            n2 += sum(bool(s >= 0.5) and chunk[k].node == "n2" and 500 <= chunk[k].ts < 590
                      for k, s in zip(out.index.tolist(), out.score.tolist(), strict=True))  # fmt: skip
        flagged[weights] = n2
    assert flagged[(4.0, 1.0, 1.0)] >= 20  # the RTT's error used to make it one
    assert flagged[None] <= 2  # the default reads the RTT but does not score it


def test_the_same_samples_give_the_same_scores_however_they_are_batched() -> None:
    """The threshold, the nodes' flags and the fits change only at step boundaries and a
    window's error does not depend on its batch: batches of 37, 500 or 3,000 samples give bit
    for bit the same scores, flags and versions."""
    samples = list(_samples(8, 600, seed=0, bad=(3, 450, 520)))
    runs = []
    for per_batch in (37, 500, 3000):
        d = ConsensusDetector(window=10, units=8, latent=3, warmup_windows=1500, warmup_epochs=2,
                              retrain_every=1200, background=False, batch_size=32, seed=0)  # fmt: skip
        got: dict[int, tuple[float, bool, int, float]] = {}
        for a in range(0, len(samples), per_batch):
            out = d.process(samples[a : a + per_batch])
            for k, i in enumerate(out.index.tolist()):
                got[a + i] = (out.score[k], bool(out.flagged[k]), int(out.versions[k]),
                              out.thresholds[k])  # fmt: skip
        runs.append(got)
    assert len(runs[0]) > 2000 and len({v[2] for v in runs[0].values()}) >= 3
    assert any(v[1] for v in runs[0].values())
    assert runs[0] == runs[1] == runs[2]
