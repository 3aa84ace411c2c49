"""models.forecast: windows, baselines, intervals, accuracy, drift, the LSTM and the online loop."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from models.forecast.accuracy import AccuracyTracker
from models.forecast.baselines import EWMABaseline
from models.forecast.drift import DriftTrigger
from models.forecast.intervals import ResidualQuantiles, linear_quantile
from models.forecast.lstm import LSTMForecaster
from models.forecast.online import OnlineForecaster
from models.forecast.retrain import BackgroundTrainer
from models.forecast.windows import FEATURES, LinkHistory, normalize_windows, step_features


def test_history_dedupes_and_wraps() -> None:
    h = LinkHistory(n_features=1, capacity=4)
    for t in range(10):
        h.append(["a"], np.array([float(t)]), np.array([[float(t)]]), np.array([float(t)]))
    rows, steps, ok = h.append(["a"], np.array([3.0]), np.array([[3.0]]), np.array([3.0]))
    assert not ok.any() and len(rows) == 0  # a replayed record is skipped
    assert h.count[0] == 10
    w = h.windows(np.array([0]), np.array([9]), width=3)
    assert w[0, :, 0].tolist() == [7.0, 8.0, 9.0]


def test_history_many_keys_in_one_batch() -> None:
    h = LinkHistory(n_features=1, capacity=8)
    keys = ["a", "b"] * 3
    ts = np.repeat(np.arange(3.0), 2)
    rows, steps, _ = h.append(keys, ts, ts[:, None], ts)
    assert rows.tolist() == [0, 1] * 3 and steps.tolist() == [0, 0, 1, 1, 2, 2]


def test_peek_gives_the_windows_that_append_then_windows_give() -> None:
    """Duplicates, late records, new keys, keys with a short history and keys that wrap the
    ring buffer: peek() accepts the records append() accepts and gathers the same windows,
    and leaves the buffers as they were."""
    rng = np.random.default_rng(3)
    h = LinkHistory(n_features=2, capacity=16)
    width = 5
    clock = {k: 0.0 for k in "abcdefg"}
    for _ in range(12):
        keys = list(rng.choice(list("abcdefg"), size=int(rng.integers(1, 30))))
        ts = []
        for k in keys:
            step = float(rng.choice([1.0, 0.0, -2.0], p=[0.8, 0.1, 0.1]))  # dup, late
            clock[k] = max(clock[k] + step, 0.0)
            ts.append(clock[k])
        t = np.array(ts)
        feats = rng.normal(size=(len(keys), 2)).astype(np.float32)
        before = (h.feats.copy(), h.ts.copy(), h.count.copy(), list(h.keys))
        ok, index, win = h.peek(keys, t, feats, width)
        assert np.array_equal(h.feats, before[0]) and np.array_equal(h.count, before[2])
        assert h.keys == before[3]
        rows, steps, got = h.append(keys, t, feats, t)
        assert np.array_equal(ok, got)
        full = steps >= width - 1
        assert np.array_equal(index, np.flatnonzero(got)[full])
        assert np.array_equal(win, h.windows(rows[full], steps[full], width))
    assert h.count.max() > h.capacity  # some key wrapped


def test_step_features_shape_and_nan_tolerance() -> None:
    f = step_features(
        np.array([0.0, 3600.0]),
        np.array([10.0, 20.0]),
        np.array([np.nan, 1.0]),
        np.array([np.nan, 1.0]),
        np.array([np.nan, 0.01]),
    )
    assert f.shape == (2, len(FEATURES)) and np.isfinite(f).all()


def test_normalize_does_not_mutate_input() -> None:
    raw = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    before = raw.copy()
    normalize_windows(raw, 2, ref_alpha=0.3)
    assert np.array_equal(raw, before)


def test_ewma_rows_independent() -> None:
    e = EWMABaseline(alpha=0.5)
    out = e.update(np.array([0, 1, 0]), np.array([10.0, 100.0, 20.0]))
    assert out.tolist() == [10.0, 100.0, 15.0]


def test_interval_coverage_follows_residuals() -> None:
    rq = ResidualQuantiles((1,), coverage=0.8, size=2000)
    rng = np.random.default_rng(3)
    rq.add(1, rng.normal(0, 2, 2000))
    lo, hi = rq.bounds(1)
    new = rng.normal(0, 2, 20000)
    assert abs(np.mean((new >= lo) & (new <= hi)) - 0.8) < 0.03


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 999, 5000])
def test_linear_quantile_is_numpys_to_the_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    qs = [0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, *rng.random(40).tolist()]
    for x in (rng.standard_normal(n), np.round(rng.standard_normal(n), 1), rng.lognormal(0, 3, n)):
        ordered = np.sort(x)
        got = [linear_quantile(ordered, q) for q in qs]
        assert got == [float(np.quantile(x, q)) for q in qs]
    x[n // 2] = np.nan
    assert np.isnan(linear_quantile(np.sort(x), 0.5)) and np.isnan(np.quantile(x, 0.5))
    with pytest.raises(ValueError, match="empty"):
        linear_quantile(np.zeros(0), 0.5)


def test_accuracy_skill_against_better_baseline() -> None:
    acc = AccuracyTracker((1,))
    y = np.full(4, 10.0)
    acc.update(1, y, model=y + 1, persistence=y + 2, ewma=y + 4, lower=y - 1, upper=y + 1)
    s = acc.summary()[1]
    assert s["skill"] == pytest.approx(0.5) and s["coverage"] == 1.0


def test_drift_ignores_falling_error() -> None:
    rng = np.random.default_rng(0)
    d = DriftTrigger(chunk=10)
    assert not d.update(np.abs(rng.normal(0, 3, 3000)))
    assert not d.update(np.abs(rng.normal(0, 1, 3000)))


def test_background_trainer_runs_one_at_a_time() -> None:
    import threading

    gate = threading.Event()

    class Slow:
        def fit(self, x, y, epochs=None):
            gate.wait(5)

        def get_weights(self):
            return [1]

    bt = BackgroundTrainer(Slow())
    assert bt.submit([0], None, epochs=1, reason="a")
    assert not bt.submit([0], None, epochs=1, reason="b")  # busy
    gate.set()
    bt.join()
    assert not bt.submit([0], None, epochs=1, reason="c")  # result not polled yet
    assert bt.poll().reason == "a"


def test_one_background_fit_at_a_time_in_a_process() -> None:
    # the bandwidth forecaster's and the consensus detector's fits at once left the stream
    # loop of a two-core machine too little CPU: the second waits for the first
    import threading

    gate = threading.Event()

    class Slow:
        def fit(self, x, y, epochs=None):
            self.n = len(x)
            gate.wait(5)

        def get_weights(self):
            return [self.n]

    first, second = BackgroundTrainer(Slow()), BackgroundTrainer(Slow())
    assert first.slot_free and second.slot_free
    assert first.submit([0], None, epochs=1, reason="bandwidth")
    assert not second.slot_free
    assert not second.submit([0, 0], None, epochs=1, reason="consensus")
    inline = BackgroundTrainer(Slow(), background=False)  # a synchronous fit never waits
    gate.set()
    assert inline.slot_free and inline.submit([0], None, epochs=1, reason="inline")
    first.join()
    assert second.slot_free
    assert second.submit([0, 0], None, epochs=1, reason="consensus")
    second.join()
    assert second.poll().weights == [2] and first.poll().reason == "bandwidth"
    assert first.slot_free


def _retrains(trainer: BackgroundTrainer, x, y, rounds: int) -> list[list[np.ndarray]]:
    """The weights of ``rounds`` background retrains on ``(x, y)`` slices, one after another."""
    out = []
    for k in range(rounds):
        part = slice(100 * k, 100 * k + 400)
        assert trainer.submit(x[part], y[part], epochs=1, reason=f"r{k}")
        trainer.join(120)
        result = trainer.poll()
        assert result is not None and not result.error, result
        out.append(result.weights)
    return out


@pytest.mark.timeout(300)
def test_retrains_in_a_worker_process_give_the_weights_of_retrains_in_a_thread() -> None:
    # Keras' training loop holds the interpreter lock the stream loop needs: the consumers
    # retrain in a worker process. The training copy travels pickled (weights, Adam moments,
    # training order) and the worker keeps it live between retrains: the same weights, bit
    # for bit, as retrains in a thread, also after a checkpoint round trip between retrains.
    from stream import workers

    _, _, x, y = _sine_windows(900, 10, seed=3)

    def trainer() -> BackgroundTrainer:
        model = LSTMForecaster(window=10, horizons=(1, 5), n_features=1, units=8, epochs=1,
                               batch_size=64, seed=4)  # fmt: skip
        model.fit(x[:300], y[:300])  # the first fit, inline (its scalers)
        return BackgroundTrainer(model)

    in_thread = _retrains(trainer(), x, y, 3)
    pool = workers.pool(max_workers=1)
    try:
        elsewhere = trainer()
        elsewhere.set_executor(pool)
        first = _retrains(elsewhere, x, y, 2)
        assert elsewhere.model.net_ is not None  # unpickled here only when asked for
        again = pickle.loads(pickle.dumps(elsewhere))  # a checkpoint between retrains
        again.set_executor(pool)
        last = _retrains(again, x[200:], y[200:], 1)
        kept = trainer()  # a second trainer continuing the worker's live copy
        kept.set_executor(pool)
        kept_runs = _retrains(kept, x, y, 3)
    finally:
        pool.shutdown()
    for got in (first + last, kept_runs):
        for a, b in zip(in_thread, got, strict=True):
            for u, v in zip(a, b, strict=True):
                np.testing.assert_array_equal(u, v)


class _DiesInAWorker:
    """A model whose fit kills the process it runs in, unless that is the test's own."""

    def __init__(self) -> None:
        self.home, self.w = os.getpid(), 0

    def fit(self, x, y, epochs=None):
        if os.getpid() != self.home:
            os._exit(1)
        self.w += len(x)

    def get_weights(self):
        return [self.w]


@pytest.mark.timeout(120)
def test_a_worker_that_dies_fails_one_retrain_and_the_next_runs_in_a_thread() -> None:
    from stream import workers

    pool = workers.pool(max_workers=1)
    try:
        bt = BackgroundTrainer(_DiesInAWorker())
        bt.set_executor(pool)
        assert bt.submit([0, 0], None, epochs=1, reason="a")
        bt.join(60)
        failed = bt.poll()
        assert failed is not None and "BrokenProcessPool" in failed.error and not failed.weights
        assert bt.executor is None and bt.slot_free  # the slot is given back
        assert bt.submit([0, 0, 0], None, epochs=1, reason="b")
        bt.join(60)
        assert bt.poll().weights == [3]
        pool2 = workers.pool(max_workers=1)
        pool2.shutdown()  # a pool that refuses the submit: the retrain runs in a thread
        bt.set_executor(pool2)
        assert bt.submit([0], None, epochs=1, reason="c")
        bt.join(60)
        assert bt.poll().weights == [4] and bt.executor is None
    finally:
        pool.shutdown()


def _sine_windows(n: int, window: int, seed: int):
    t = np.arange(n + window + 5)
    rng = np.random.default_rng(seed)
    series = 5.0 + 0.5 * np.sin(2 * np.pi * t / 25) + 0.03 * rng.standard_normal(len(t))
    idx = np.arange(window - 1, len(t) - 5)
    x = np.stack([series[i - window + 1 : i + 1, None] for i in idx]).astype(np.float32)
    y = np.stack([series[idx + 1], series[idx + 5]], axis=1)
    return series, idx, x, y


def test_lstm_beats_persistence_on_known_structure() -> None:
    series, idx, x, y = _sine_windows(2500, 20, seed=1)
    f = LSTMForecaster(window=20, horizons=(1, 5), n_features=1, units=16, epochs=6, seed=0)
    f.fit(x[:2000], y[:2000])
    pred = f.predict(x[2000:])
    mae = np.abs(pred[:, 1] - y[2000:, 1]).mean()
    persist = np.abs(series[idx[2000:]] - y[2000:, 1]).mean()
    assert mae < 0.5 * persist


def test_lstm_seeded_and_pickle_round_trip() -> None:
    _, _, x, y = _sine_windows(600, 10, seed=2)
    a = LSTMForecaster(window=10, horizons=(1, 5), n_features=1, units=8, epochs=1, seed=5)
    b = LSTMForecaster(window=10, horizons=(1, 5), n_features=1, units=8, epochs=1, seed=5)
    pa, pb = a.fit(x, y).predict(x[:50]), b.fit(x, y).predict(x[:50])
    np.testing.assert_allclose(pa, pb, rtol=1e-5)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_allclose(c.predict(x[:50]), pa, rtol=1e-6)
    assert np.isfinite(pa).all()


def test_a_window_s_forecast_is_the_same_in_any_batch() -> None:
    """XLA-compiled inference in calls of INFER_ROWS rows (padded, or cut): a window's forecast
    is bit for bit the same alone, among 37 or 700 others, or in a batch of 2,500 (ten calls),
    so a forecast never depends on how the records arrived."""
    from models.forecast import tfrt

    rng = np.random.default_rng(4)
    x = rng.normal(size=(2500, 30, len(FEATURES))).astype(np.float32)
    y = rng.normal(size=(2500, 3))
    f = LSTMForecaster(window=30, units=8, epochs=1, seed=1).fit(x[:300], y[:300])
    whole = f.predict(x)
    assert whole.shape == (2500, 3) and np.isfinite(whole).all()
    for lo, n in ((0, 1), (5, 37), (1000, 700), (tfrt.INFER_ROWS - 3, 7), (2480, 20)):
        assert np.array_equal(f.predict(x[lo : lo + n]), whole[lo : lo + n]), (lo, n)


def _link_stream(links: int, ticks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(ticks, dtype=float)
    level = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (links, ticks)), axis=1))
    tput = (
        level
        * (1 + 0.3 * np.sin(2 * np.pi * t / 20))
        * (1 + 0.02 * rng.standard_normal((links, ticks)))
    )
    keys = [(f"n{i}", "p") for i in range(links)]
    for k in range(ticks):
        yield keys, np.full(links, t[k]), tput[:, k]


def test_online_forecaster_warms_up_retrains_and_scores() -> None:
    f = OnlineForecaster(
        window=12,
        horizons=(1, 5),
        units=8,
        capacity=128,
        warmup_windows=600,
        warmup_epochs=8,
        retrain_every=800,
        retrain_windows=600,
        background=False,
        batch_size=32,
        residual_size=1000,
        seed=0,
    )
    ones = np.ones(8)
    batch: list = []
    outs = []
    for keys, ts, tput in _link_stream(8, 400):
        batch.append((keys, ts, tput))
        if len(batch) == 10:
            k = [x for b in batch for x in b[0]]
            ts_ = np.concatenate([b[1] for b in batch])
            tp = np.concatenate([b[2] for b in batch])
            outs.append(f.process(k, ts_, tp, np.tile(ones, 10), np.tile(ones, 10), np.zeros(80)))
            batch = []
    assert f.version_ >= 3 and len(f.retrains_) >= 2
    s = f.accuracy_.summary()[5]
    assert s["n"] > 1000 and s["mae"] < s["mae_persistence"]  # the sine is learnable
    assert 0.75 < s["coverage"] < 0.99
    last = outs[-1]
    assert (last.lower <= last.value + 1e-9).all() and (last.value <= last.upper + 1e-9).all()
    g = pickle.loads(pickle.dumps(f))
    assert g.version_ == f.version_ and g.records_ == f.records_
    assert g.trainer_.model.net_ is not None and not g.trainer_.busy  # fresh trainer, same weights
    np.testing.assert_allclose(g.trainer_.model.get_weights()[0], f.model_.get_weights()[0])


def test_drift_in_the_error_triggers_an_early_retrain() -> None:
    f = OnlineForecaster(
        window=8,
        horizons=(1,),
        units=4,
        capacity=96,
        warmup_windows=300,
        warmup_epochs=1,
        retrain_every=10**9,
        retrain_windows=300,
        drift_chunk=20,
        background=False,
        batch_size=64,
        seed=0,
    )
    rng = np.random.default_rng(0)
    links, ones = 10, np.ones(10)
    keys = [(f"n{i}", "p") for i in range(links)]
    for t in range(700):
        noise = 0.01 if t < 350 else 0.3  # the link noise jumps: the error rises
        tput = 100.0 * (1.0 + noise * rng.standard_normal(links))
        f.process(keys, np.full(links, float(t)), tput, ones, ones, np.zeros(links))
    assert f.drift_.detections >= 1
    assert any(r["reason"] == "drift" for r in f.retrains_)


def test_a_background_warm_up_fit_leaves_the_baselines_publishing_until_it_is_done() -> None:
    f = OnlineForecaster(window=12, horizons=(1, 5), units=8, capacity=128, warmup_windows=600,
                         warmup_epochs=4, retrain_every=10**9, background=True, batch_size=32,
                         residual_size=1000, seed=0)  # fmt: skip
    ones = np.ones(8)
    started = published = 0
    stream = list(_link_stream(8, 400))
    i = 0
    while i < len(stream) and not started:
        keys, ts, tput = stream[i]
        out = f.process(keys, ts, tput, ones, ones, np.zeros(8))
        started = any("warm-up fit started" in e for e in out.events)
        i += 1
    assert started and not f.ready  # the call that started it did not wait for it
    for keys, ts, tput in stream[i : i + 5]:  # the stream goes on, the baselines published
        out = f.process(keys, ts, tput, ones, ones, np.zeros(8))
        published += len(out.index)
    assert published > 0
    f.trainer_.join(120)
    keys, ts, tput = stream[i + 5]
    out = f.process(keys, ts, tput, ones, ones, np.zeros(8))
    assert f.ready and f.version_ == 1 and f.retrains_[0]["reason"] == "warm-up"
    assert any(e.startswith("warm-up retrain done") for e in out.events)
