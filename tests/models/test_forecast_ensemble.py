"""The bandwidth ensemble: batch invariance, causal combination, never worse than the best
baseline where one member is clearly best, interval coverage on a stationary series, harmonic
baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.forecast.baselines import EWMABaseline, HarmonicBaseline
from models.forecast.ensemble import OnlineCombiner
from models.forecast.online import OnlineForecaster


def _tick_by_tick(tput: np.ndarray) -> tuple[list[tuple[str, str]], Any, Any, Any]:
    """``tput`` ``(links, ticks)`` as records tick by tick: the link keys, and each record's
    link index, tick (its event time) and value."""
    links, ticks = tput.shape
    keys = [(f"n{i}", "p") for i in range(links)]
    t = np.repeat(np.arange(ticks, dtype=float), links)
    return keys, np.tile(np.arange(links), ticks), t, tput.T.ravel()


def _feed(
    f: OnlineForecaster, tput: np.ndarray, per_batch: int, reports: list[Any] | None = None
) -> dict[tuple[int, int], Any]:
    """Feed ``tput`` ``(links, ticks)`` tick by tick in batches; published rows by
    ``(link, tick)`` -> ``(value, lower, upper, weights)`` arrays ``(H,)``/``(H, M)``; the
    accuracy reports go to ``reports`` as ``(record index, model version, summary)``."""
    keys, k, t, y = _tick_by_tick(tput)
    ones = np.ones(len(y))
    out: dict[tuple[int, int], Any] = {}
    for a in range(0, len(y), per_batch):
        s = slice(a, a + per_batch)
        b = f.process([keys[i] for i in k[s]], t[s], y[s], ones[s], ones[s], 0 * ones[s])
        if reports is not None:
            reports += [(a + i, v, summary) for i, v, summary in f.take_reports()]
        for row, i in enumerate(b.index.tolist()):
            j = a + i
            out[(int(k[j]), int(t[j]))] = (b.value[row], b.lower[row], b.upper[row], b.weights[row])
    return out


def _small(**kw: Any) -> OnlineForecaster:
    base: dict[str, Any] = dict(window=8, horizons=(1, 4), units=4, capacity=96,
                                warmup_windows=10**9, background=False, batch_size=64, seed=1)  # fmt: skip
    base.update(kw)
    return OnlineForecaster(**base)


def _mae(
    pub: dict[tuple[int, int], Any], tput: np.ndarray, j: int, h: int, fc: np.ndarray | None = None
) -> float:
    """MAE at horizon ``h`` of the published forecasts, or of ``fc`` ``(links, ticks)`` on the
    same (link, tick) pairs."""
    keys = [(k, t) for (k, t) in pub if t + h < tput.shape[1]]
    f = [pub[k][0][j] for k in keys] if fc is None else [fc[k, t] for k, t in keys]
    return float(np.mean(np.abs(np.array(f) - np.array([tput[k, t + h] for k, t in keys]))))


def test_the_same_records_give_the_same_forecasts_however_they_are_batched() -> None:
    """Fits, retrains, interval quantiles, the fleet prior and the sampling interval change only
    at step boundaries, and LSTM inference does not depend on a window's batch, so batches of
    37, 500 or 3,000 records (a live stream, a file, a backlog) give bit for bit the same
    published forecasts, weights and intervals."""
    rng = np.random.default_rng(5)
    links, ticks = 9, 420
    tput = 80.0 * np.exp(np.cumsum(rng.normal(0, 0.06, (links, ticks)), axis=1))
    tput[:, 300:] *= 3.0  # a level shift
    kw = dict(warmup_windows=400, warmup_epochs=1, retrain_every=700, retrain_windows=300)
    runs, versions = [], []
    for per_batch in (37, 500, 3000):
        f = _small(**kw)
        f.report_every, reports = 500, []
        runs.append(_feed(f, tput, per_batch, reports))
        versions.append((f.version_, [r["at_record"] for r in f.retrains_], reports))
    assert versions[0][0] >= 3 and len(versions[0][2]) >= 5
    assert versions[0] == versions[1] == versions[2]  # fits and accuracy reports too
    assert len(runs[0]) > 2500 and runs[0].keys() == runs[1].keys() == runs[2].keys()
    for key, first in runs[0].items():
        for other in (runs[1][key], runs[2][key]):
            assert all(np.array_equal(x, y) for x, y in zip(first, other, strict=True)), key


def test_lstm_forecasts_inferred_ahead_are_those_of_one_piece_at_a_time() -> None:
    """The LSTM's forecasts inferred in large batches ahead of the step pieces (again after
    every synchronous fit that changes the model in the middle of a call) give bit for bit
    the published forecasts of inferring each piece on its own, also with duplicate and late
    records and a link that starts mid-call; in fewer, larger inference calls."""
    rng = np.random.default_rng(8)
    links, ticks = 7, 400
    tput = 60.0 * np.exp(np.cumsum(rng.normal(0, 0.05, (links, ticks)), axis=1))
    keys, k, t, y = _tick_by_tick(tput)
    late = rng.random(len(t)) < 0.05
    t[late] -= 3.0  # late (skipped) records
    dup = np.flatnonzero(rng.random(len(t)) < 0.05)  # duplicates right after the original
    k, t, y = (np.insert(a, dup + 1, a[dup]) for a in (k, t, y))
    young = (k == 6) & (t < 150)  # the last link starts in the middle of the first call
    k, t, y = k[~young], t[~young], y[~young]
    ones = np.ones(len(y))
    kw = dict(warmup_windows=300, warmup_epochs=1, retrain_every=500, retrain_windows=300)
    outs, calls = [], []
    for ahead in (0, 1024, 150):
        f = _small(infer_ahead=ahead, **kw)
        rows: list[int] = []
        predict = f.model_.predict
        f.model_.predict = lambda x, predict=predict, rows=rows: (rows.append(len(x)), predict(x))[
            1
        ]  # type: ignore[method-assign]
        got = [f.process([keys[i] for i in k[s]], t[s], y[s], ones[s], ones[s], 0 * ones[s])
               for s in (slice(0, 1400), slice(1400, 1401), slice(1401, None))]  # fmt: skip
        outs.append(got)
        calls.append(rows)
        assert f.version_ >= 3  # the warm-up and retrains fell inside calls
    # fewer calls (a fit in the middle of a call wastes what was inferred beyond it)
    assert sum(calls[0]) > 1000 and max(calls[0]) <= 100 and max(calls[1]) > 500
    assert len(calls[1]) < len(calls[2]) < len(calls[0]) * 0.7
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert np.array_equal(a.index, b.index) and np.array_equal(a.versions, b.versions)
            for name in ("value", "lower", "upper", "weights"):
                assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name


def test_forecasts_prefetched_in_a_thread_are_those_of_process_alone() -> None:
    """The consumer starts a batch's first LSTM inference in a thread before the other
    processors run (``prefetch``); ``process`` then publishes bit for bit what it would alone,
    through fits inside calls, and infers again when the model was swapped in between."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    links, ticks = 6, 300
    tput = 70.0 * np.exp(np.cumsum(rng.normal(0, 0.05, (links, ticks)), axis=1))
    keys, k, t, y = _tick_by_tick(tput)
    ones = np.ones(len(y))
    kw = dict(warmup_windows=300, warmup_epochs=1, retrain_every=400, retrain_windows=300)
    plain, fetched = _small(**kw), _small(**kw)
    used = []
    with ThreadPoolExecutor(1) as pool:
        for n, a in enumerate(range(0, len(y), 130)):
            s = slice(a, a + 130)
            args = ([keys[i] for i in k[s]], t[s], y[s], ones[s], ones[s], 0 * ones[s])
            pre = fetched.prefetch(*args, executor=pool)
            used.append(pre is not None)
            if n == 9 and pre is not None:  # a retrain swapped in after the prefetch
                for f in (plain, fetched):
                    f.model_.set_weights([w * 1.01 for w in f.model_.get_weights()])
                    f.version_ += 1
            one, two = plain.process(*args), fetched.process(*args, prefetched=pre)
            assert np.array_equal(one.index, two.index) and np.array_equal(
                one.versions, two.versions)  # fmt: skip
            for name in ("value", "lower", "upper", "weights"):
                assert np.array_equal(getattr(one, name), getattr(two, name), equal_nan=True)
    assert fetched.version_ >= 4 and sum(used) > 5 and not used[0]  # nothing before a fit


def test_prediction_at_t_does_not_change_when_the_future_does() -> None:
    """A forecast made at tick t (LSTM, retrains, combination, intervals) is the same whatever
    comes after t, even later samples in the same batch."""
    rng = np.random.default_rng(0)
    links, ticks, cut = 6, 260, 170
    base = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.05, (links, ticks)), axis=1))
    other = base.copy()
    other[:, cut + 1 :] *= rng.uniform(0.2, 5.0, (links, ticks - cut - 1))  # a different future
    kw = dict(warmup_windows=300, warmup_epochs=1, retrain_every=400, retrain_windows=300)
    a = _feed(_small(**kw), base, per_batch=50)
    b = _feed(_small(**kw), other, per_batch=50)  # tick 170 sits inside a batch of 50 records
    past = [key for key in a if key[1] <= cut]
    assert len(past) > 500 and all(key in b for key in past)
    for key in past:
        for x, y in zip(a[key], b[key], strict=True):
            np.testing.assert_array_equal(x, y)
    later = [key for key in a if key[1] > cut + 5]
    assert any(not np.array_equal(a[k][0], b[k][0]) for k in later)  # the future does matter


@pytest.mark.parametrize("rule", ["ftl", "ewa"])
def test_never_worse_than_the_clearly_best_member(rule: str) -> None:
    """A noise-free level that steps to a new value every 40-80 ticks: the last value is
    clearly the best forecast at every horizon (the smoothers lag after every step); FTL picks
    it and is not worse than it; EWA stays within a few percent. (With noise on the flat parts a smoother is
    locally better, and right after a step the ensemble pays for having followed it.)"""
    rng = np.random.default_rng(1)
    ticks = 700
    steps = np.zeros((8, ticks))
    for i in range(8):
        steps[i, np.cumsum(rng.integers(40, 80, 20))[:-1].clip(0, ticks - 1)] = 1.0
    level = 100.0 * np.exp(np.cumsum(steps * rng.normal(0, 0.5, (8, ticks)), axis=1))
    tput = level
    f = _small(rule=rule)
    pub = _feed(f, tput, per_batch=64)
    persistence = f.members.index("persistence")
    rows = np.zeros(tput.shape[1], np.int64)
    ewma = np.stack([EWMABaseline(0.3).update(rows, x) for x in tput])
    harmonic = np.stack([HarmonicBaseline(5).update(rows, x) for x in tput])
    for j, h in enumerate(f.horizons):
        mae = _mae(pub, tput, j, h)
        maes = {
            name: _mae(pub, tput, j, h, fc)
            for name, fc in (("persistence", tput), ("ewma", ewma), ("harmonic", harmonic))
        }
        assert 1.2 * maes["persistence"] < min(maes["ewma"], maes["harmonic"])  # clearly
        # FTL publishes the leader itself; EWA keeps a little weight on the runner-up
        # (the harmonic mean equals the last value on the flat parts)
        assert mae <= (1.0 if rule == "ftl" else 1.08) * maes["persistence"], (h, mae, maes)
        lead = np.array([v[3][j].argmax() for (_k, t), v in pub.items() if t > 100])
        share = np.mean(lead == persistence)
        assert share > (0.95 if rule == "ftl" else 0.9), (h, share)


def test_ftl_follows_the_best_member_when_noise_makes_ewma_best() -> None:
    """White noise around a level: EWMA beats the last value; FTL switches to it."""
    rng = np.random.default_rng(2)
    tput = 100.0 * (1.0 + 0.2 * rng.standard_normal((8, 600)))
    f = _small(rule="ftl")
    pub = _feed(f, tput, per_batch=64)
    names = f.members
    for j, h in enumerate(f.horizons):
        lead = [names[int(v[3][j].argmax())] for (_k, t), v in pub.items() if t > 100]
        assert lead.count("persistence") < 0.05 * len(lead), (h, set(lead))
        assert _mae(pub, tput, j, h) < 0.8 * _mae(pub, tput, j, h, tput)


def test_interval_coverage_on_a_stationary_noisy_series() -> None:
    rng = np.random.default_rng(3)
    level = 100.0 * rng.uniform(0.5, 20.0, (20, 1))  # links 50-2000 Mbit/s: one fleet buffer
    tput = level * np.exp(0.15 * rng.standard_normal((20, 1500)))
    f = _small(residual_size=2000)
    pub = _feed(f, tput, per_batch=200)
    for j, h in enumerate(f.horizons):
        hits = [v[1][j] <= tput[k, t + h] <= v[2][j] for (k, t), v in pub.items()
                if t + h < tput.shape[1] and t > 200]  # fmt: skip
        assert len(hits) > 20000
        assert abs(np.mean(hits) - 0.9) < 0.02, (h, np.mean(hits))


def test_combiner_prior_and_validation() -> None:
    c = OnlineCombiner(("a", "b"), horizons=(1,), rule="ftl", memory=20, prior_strength=5)
    many = np.arange(10)
    for _ in range(30):  # across the fleet, "b" is better
        c.update(many, 0, np.tile([[2.0, 1.0]], (10, 1)), level=np.full(10, 100.0))
    new = np.array([20])  # a link never seen: starts from the fleet's relative errors
    w = c.weights(new, np.ones((1, 1, 2), bool), level=np.array([5.0]))
    assert w[0, 0].tolist() == [0.0, 1.0]
    w = c.weights(new, np.array([[[True, False]]]), level=np.array([5.0]))  # "b" missing now
    assert w[0, 0].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="rule"):
        OnlineCombiner(("a",), (1,), rule="mean")


@pytest.mark.parametrize("with_order", [True, False])
def test_one_update_for_every_horizon_is_one_update_per_horizon(with_order: bool) -> None:
    """The forecaster feeds each rank's resolved errors of all horizons in one call; that must
    be the calls per horizon it replaces, to the bit: the links a call starts (each from its
    first horizon's level), the discounted errors, and the fleet prior after a flush."""
    rng = np.random.default_rng(8)
    one = OnlineCombiner(("a", "b", "c"), horizons=(1, 5, 15), prior_strength=10.0)
    per = OnlineCombiner(("a", "b", "c"), horizons=(1, 5, 15), prior_strength=10.0)
    t = 0
    for step in range(40):
        # links 0-5 from the start, 6-9 joining later; a link resolves some horizons, not all
        links = np.arange(6 if step < 20 else 10)
        rows, js = [], []
        for j in range(3):
            r = links[rng.random(len(links)) < 0.7]
            rows.append(r)
            js.append(np.full(len(r), j))
        r, j = np.concatenate(rows), np.concatenate(js)
        err = rng.lognormal(0, 1, (len(r), 3))
        err[rng.random(err.shape) < 0.1] = np.nan  # members without a forecast
        level = rng.uniform(50, 150, len(r))
        order = t + np.arange(len(r)) if with_order else None
        t += len(r)
        one.update(r, j, err, level, order)
        for jj in range(3):
            m = j == jj
            per.update(r[m], jj, err[m], level[m], None if order is None else order[m])
        if step % 7 == 6:
            one.flush_prior()
            per.flush_prior()
    one.flush_prior()
    per.flush_prior()
    for name in ("loss_", "count_", "started_", "prior_loss_", "prior_count_"):
        assert np.array_equal(getattr(one, name), getattr(per, name)), name
    assert one.started_[:10].all()


def test_shrink_keeps_the_fleet_s_errors_in_every_weight() -> None:
    """A link's few recent errors favour "a" by chance; the fleet's many say "b" is better:
    with shrink the fleet's view weighs in, without it the link's own errors decide."""
    fleet, link, level = np.arange(30), np.array([40]), np.full(30, 100.0)
    c = {k: OnlineCombiner(("a", "b"), (1,), rule="ftl", memory=50, prior_strength=0, shrink=k)
         for k in (0.0, 1000.0)}  # fmt: skip
    for comb in c.values():
        for t in range(200):  # "b" is 20% better across the fleet
            comb.update(fleet, 0, np.tile([[1.2, 1.0]], (30, 1)), level, order=t * 30 + fleet)
        comb.flush_prior()
        for _ in range(3):  # the new link: three errors where "a" happened to win
            comb.update(link, 0, np.array([[0.9, 1.1]]), np.array([100.0]))
    avail = np.ones((1, 1, 2), bool)
    assert c[0.0].weights(link, avail, np.array([100.0]))[0, 0].tolist() == [1.0, 0.0]
    assert c[1000.0].weights(link, avail, np.array([100.0]))[0, 0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="shrink"):
        OnlineCombiner(("a",), (1,), shrink=-1.0)


def test_harmonic_baseline_matches_definition() -> None:
    rng = np.random.default_rng(4)
    x = rng.uniform(1, 10, 50)
    out = HarmonicBaseline(5).update(np.zeros(50, np.int64), x)
    want = [len(x[max(0, i - 4) : i + 1]) / np.sum(1 / x[max(0, i - 4) : i + 1]) for i in range(50)]
    np.testing.assert_allclose(out, want)
