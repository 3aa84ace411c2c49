"""The residual component (per-link PCA reconstruction error): it sees a record that breaks
how a link's metrics move together although each metric stays in its usual range, it is
scale-free across links, it raises the combined score, and it is off with
``residual_weight=0``."""

from __future__ import annotations

import datetime as dt
import pickle
import random
from collections import deque
from typing import Any

import numpy as np
import pytest

from models.reliability import LinkResidual, ReliabilityDetector
from models.reliability.residual import _Window

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def coupled(i: int, node: str, rng: random.Random, broken: bool = False) -> dict[str, Any]:
    """Three metrics driven by one load factor; ``broken``: ``c`` moves with the load instead
    of against it, inside its usual range (the two agree only at the mean load)."""
    load = 0.5 + 0.2 * rng.gauss(0, 1)
    a, b = 10 + 4 * load + 0.05 * rng.gauss(0, 1), 3 + 2 * load + 0.05 * rng.gauss(0, 1)
    c = 7 - 3 * load + 0.05 * rng.gauss(0, 1)
    if broken:
        c = 4 + 3 * load + 0.05 * rng.gauss(0, 1)
    ts = T0 + dt.timedelta(seconds=10 * i)
    return {"timestamp": ts, "node_id": node, "extra": {"a": a, "b": b, "c": c}}


def test_a_correlation_break_inside_every_metric_s_range_scores_high() -> None:
    rng = random.Random(0)
    res = LinkResidual(min_rows=300, refit_every=300)
    base = np.array(
        [[10 + 4 * t, 3 + 2 * t, 7 - 3 * t] for t in (rng.gauss(0.5, 0.2) for _ in range(600))]
    )
    res.learn_many(["x"] * 600, base + np.random.default_rng(0).normal(0, 0.05, base.shape))
    assert res.refit() == 1
    typical = res.score_many(["x"], np.array([[10 + 4 * 0.7, 3 + 2 * 0.7, 7 - 3 * 0.7]]))[0]
    # c = 6.4 is inside c's usual range (7 - 3 * load: about 4.6 to 8.2), against the load
    broken = res.score_many(["x"], np.array([[10 + 4 * 0.7, 3 + 2 * 0.7, 6.4]]))[0]
    assert typical < 5 and broken > 100 * typical


def test_scores_are_relative_to_each_key_s_own_fit() -> None:
    rng = np.random.default_rng(1)
    res = LinkResidual(min_rows=200, refit_every=200)
    t = rng.normal(size=(400, 1))
    small = np.hstack([t, t, t]) + 0.3 * rng.normal(size=(400, 3))
    large = 1000 * (np.hstack([t, t, t]) + 0.3 * rng.normal(size=(400, 3)))
    res.learn_many(["small"] * 400 + ["large"] * 400, np.vstack([small, large]))
    res.refit()
    a = np.median(res.score_many(["small"] * 400, small))
    b = np.median(res.score_many(["large"] * 400, large))
    assert 0.5 < a / b < 2  # typical records of both keys score alike, whatever their units


def test_the_break_raises_the_detector_s_score_and_nothing_without_the_component() -> None:
    def run(**kw: Any) -> list[Any]:
        rng = random.Random(3)
        det = ReliabilityDetector(seed=1, warmup=300, step=100, residual_min_rows=400, **kw)
        det.process([coupled(i, "n-1", rng) for i in range(1500)])
        scored, _ = det.process([coupled(1500 + i, "n-1", rng, broken=i >= 20) for i in range(40)])
        return scored

    on = run()
    assert np.median([s.residual for s in on[20:]]) > 0.99  # the component sees it
    assert np.median([s.deviation for s in on[20:]]) < 0.99  # no single metric is extreme
    assert max(s.residual for s in on[:20]) < 0.99
    off = run(residual_weight=0.0)
    assert {s.residual for s in off} == {0.5}  # no opinion: the component is not there
    # it votes in the mean only (never alone as the most surprised detector): the combined
    # score of every broken record rises, and of the most broken ones by a lot
    rise = [a.score - b.score for a, b in zip(on[20:], off[20:], strict=True)]
    assert min(rise) > 0.0 and np.mean(rise) > 0.05, rise
    assert max(s.score for s in on[20:]) > max(s.score for s in off[20:]) + 0.3


def test_a_checkpoint_from_before_the_component_restores_without_it() -> None:
    det = ReliabilityDetector(seed=1, residual_weight=0.0)
    state = det.__dict__.copy()
    for key in ("residual_", "residual_pending_"):
        state.pop(key)
    state["calibrators_"] = {k: v for k, v in state["calibrators_"].items() if k != "residual"}
    old = ReliabilityDetector.__new__(ReliabilityDetector)
    old.__setstate__(state)
    rng = random.Random(0)
    scored, _ = old.process([coupled(i, "n-1", rng) for i in range(50)])
    assert len(scored) == 50 and old.residual_ is None
    assert pickle.loads(pickle.dumps(old)).residual_ is None


def test_a_window_pickles_as_one_matrix_and_restores_row_for_row() -> None:
    rng = np.random.default_rng(4)
    res = LinkResidual(window=50, min_rows=20, refit_every=20)
    narrow = rng.normal(size=(30, 3))
    narrow[4, 1] = np.nan  # an absent metric stays absent
    res.learn_many(["a"] * 30, narrow)
    res.learn_many(["a"] * 30, rng.normal(size=(30, 5)))  # the feature set grew meanwhile
    res.learn_many(["b"] * 10, rng.normal(size=(10, 5)))
    res.refit()
    state = res.keys_["a"].__getstate__()
    assert state["matrix"].shape == (50, 5) and state["sizes"].tolist() == [3] * 20 + [5] * 30
    back = pickle.loads(pickle.dumps(res))
    for key in ("a", "b"):
        old, new = res.keys_[key], back.keys_[key]
        assert new.rows.maxlen == old.rows.maxlen == 50
        assert [r.shape for r in new.rows] == [r.shape for r in old.rows]
        assert all(
            np.array_equal(x, y, equal_nan=True) for x, y in zip(old.rows, new.rows, strict=True)
        )
        assert (new.new, new.fits) == (old.new, old.fits)
    probe = rng.normal(size=(4, 5))
    np.testing.assert_array_equal(
        back.score_many(["a", "a", "b", "c"], probe), res.score_many(["a", "a", "b", "c"], probe)
    )
    more = rng.normal(size=(30, 5))  # and both go on the same way
    for r in (res, back):
        r.learn_many(["a"] * 30, more)
        r.refit()
    assert len(back.keys_["a"].rows) == 50 and back.keys_["a"].fits == res.keys_["a"].fits == 2
    np.testing.assert_array_equal(back.score_many(["a"], probe), res.score_many(["a"], probe))


# A window pickled by the code of 71e0bc2 (before windows were pickled as one matrix): made
# with LinkResidual(window=4).learn_many(["a"] * 3, [[1, 2], [3, nan], [5, 6]]), keys_["a"]
KEY_71E0BC2 = (
    b"\x80\x04\x95d\x01\x00\x00\x00\x00\x00\x00\x8c\x1bmodels.reliability.residual\x94\x8c\x04_Key"
    b"\x94\x93\x94)\x81\x94}\x94(\x8c\x04rows\x94\x8c\x0bcollections\x94\x8c\x05deque\x94\x93\x94)K"
    b"\x04\x86\x94R\x94(\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05"
    b"numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02\x85\x94h"
    b"\x0e\x8c\x05dtype\x94\x93\x94\x8c\x02f8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff"
    b"\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x10\x00\x00\x00\x00\x00\x00\xf0?\x00\x00\x00"
    b"\x00\x00\x00\x00@\x94t\x94bh\rh\x10K\x00\x85\x94h\x12\x87\x94R\x94(K\x01K\x02\x85\x94h\x1a"
    b"\x89C\x10\x00\x00\x00\x00\x00\x00\x08@\x00\x00\x00\x00\x00\x00\xf8\x7f\x94t\x94bh\rh\x10K"
    b"\x00\x85\x94h\x12\x87\x94R\x94(K\x01K\x02\x85\x94h\x1a\x89C\x10\x00\x00\x00\x00\x00\x00"
    b"\x14@\x00\x00\x00\x00\x00\x00\x18@\x94t\x94be\x8c\x03new\x94K\x03\x8c\x03fit\x94N\x8c\x04"
    b"fits\x94K\x00ub."
)


def test_a_window_pickled_row_by_row_still_restores() -> None:
    key = pickle.loads(KEY_71E0BC2)
    assert key.rows.maxlen == 4 and (key.new, key.fit, key.fits) == (3, None, 0)
    assert [r.tolist() for r in key.rows][::2] == [[1.0, 2.0], [5.0, 6.0]]
    assert key.rows[1][0] == 3.0 and np.isnan(key.rows[1][1])
    assert "matrix" in key.__getstate__()  # it pickles in the new form from then on
    again = pickle.loads(pickle.dumps(key))
    assert all(
        np.array_equal(x, y, equal_nan=True) for x, y in zip(key.rows, again.rows, strict=True)
    )


def test_a_window_keeps_the_rows_a_deque_of_them_would() -> None:
    # the window is one matrix used as a ring (grown, widened, wrapped): it must hold exactly
    # the rows, widths and order that a deque(maxlen=window) of the rows held before
    rng = np.random.default_rng(9)
    window = 150  # grows 64 -> 128 -> 150, then wraps
    kept: deque[np.ndarray] = deque(maxlen=window)
    w = _Window(window)
    for i in range(700):
        width = 3 + i // 200  # the feature set grows now and then
        row = rng.normal(size=width)
        if i % 37 == 0:
            row[0] = np.nan
        kept.append(row)
        w.append(row)
        if i % 50 == 0 or i > 690:
            assert len(w) == len(kept)
            assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(w, kept, strict=True))
    assert np.array_equal(w[-1], kept[-1]) and np.array_equal(w[0], kept[0], equal_nan=True)
    m, sizes = w.padded()
    assert m.shape == (window, 6) and sizes.tolist() == [r.size for r in kept]
    with pytest.raises(IndexError):
        w[window]


def _numpy_scores(res: LinkResidual, keys: list[str], rows: np.ndarray) -> np.ndarray:
    """The residual score written with numpy, key by key (the compiled loop's reference)."""
    out = np.full(len(keys), np.nan)
    for i, key in enumerate(keys):
        k = res.keys_.get(key)
        if k is None or k.fit is None:
            continue
        fit, d = k.fit, k.fit.mean.size
        x = np.full(d, np.nan)
        x[: min(d, rows.shape[1])] = rows[i, :d]
        z = (np.where(np.isnan(x), fit.mean, x) - fit.mean) / fit.scale
        resid = z - (z @ fit.basis) @ fit.basis.T
        out[i] = np.sum(resid**2) / fit.typical
    return out


def test_compiled_scores_are_the_numpy_formula_and_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(9)
    res = LinkResidual(window=300, min_rows=100, refit_every=100)
    t = rng.normal(size=(400, 1))
    res.learn_many(["a"] * 400, np.hstack([t, 2 * t, -t, rng.normal(size=(400, 1))]))
    res.learn_many(["b"] * 200, rng.normal(size=(200, 3)))  # narrower: another d
    res.learn_many(["c"] * 50, rng.normal(size=(50, 4)))  # too few rows: no fit
    assert res.refit() == 2
    keys = [rng.choice(["a", "b", "c", "d"]) for _ in range(500)]
    rows = 2 * rng.normal(size=(500, 4))
    rows[rng.random(size=rows.shape) < 0.1] = np.nan  # absent metrics read the mean
    whole = res.score_many(keys, rows)
    np.testing.assert_allclose(whole, _numpy_scores(res, keys, rows), rtol=1e-12, atol=0)
    assert np.isnan(whole[[k in ("c", "d") for k in keys]]).all()
    parts = np.concatenate([res.score_many(keys[i : i + 37], rows[i : i + 37])
                            for i in range(0, 500, 37)])  # fmt: skip
    assert np.array_equal(whole, parts, equal_nan=True)  # bit for bit
    narrow = res.score_many(keys, rows[:, :3])  # rows narrower than a fit: the rest absent
    wide = rows[:, :3].copy()
    np.testing.assert_allclose(
        narrow,
        _numpy_scores(res, keys, np.hstack([wide, np.full((500, 1), np.nan)])),
        rtol=1e-12,
    )
    res.learn_many(["a"] * 100, rng.normal(size=(100, 4)))
    assert res.refit() == 1  # a refit replaces what the compiled loop reads
    np.testing.assert_allclose(
        res.score_many(keys, rows), _numpy_scores(res, keys, rows), rtol=1e-12, atol=0
    )
