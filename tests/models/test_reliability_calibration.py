"""Calibration (:mod:`models.reliability.calibration`): the batch paths the detector scores
with give what one record at a time gives, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.reliability.calibration import ScoreCombiner, TailQuantile, surprise, surprises

CONFIGS = {
    "default": {},
    "top rank": {"mid_rank": False},
    "min scale": {"min_scale": 1.0},
    "small": {"window": 300, "refresh": 37, "min_count": 50},
}
ODD = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308]


def stream(seed: int, n: int) -> np.ndarray:
    """A flat start (a detector that reports 0 until fitted), then heavy-tailed values with
    ties, so flat tails, the rank path and the exponential tail are all met."""
    rng = np.random.default_rng(seed)
    rest = np.round(rng.standard_t(3, size=n - 400), 2)
    return np.concatenate([np.zeros(400), rest])


@pytest.mark.parametrize("name", CONFIGS)
def test_score_exact_is_score_one_bit_for_bit(name: str) -> None:
    cal = TailQuantile(**CONFIGS[name])
    probe = np.concatenate([stream(9, 600)[-200:] * 3, ODD])
    assert np.array_equal(cal.score_exact(probe), [cal.score_one(x) for x in probe])  # empty
    for i, x in enumerate(stream(1, 3000)):
        cal.learn_one(float(x))
        if i % 250 == 0 or cal._flat:
            got = cal.score_exact(probe)
            want = np.array([cal.score_one(float(x)) for x in probe])
            assert np.array_equal(got, want), i


@pytest.mark.parametrize("name", CONFIGS)
def test_chunks_of_stable_for_scored_then_learned_at_once_are_one_at_a_time(name: str) -> None:
    values = stream(2, 4000)
    keep = np.random.default_rng(3).random(len(values)) < 0.8  # the caller learns only some
    one, many = TailQuantile(**CONFIGS[name]), TailQuantile(**CONFIGS[name])
    want = []
    for x, k in zip(values.tolist(), keep.tolist(), strict=True):
        want.append(one.score_one(x))
        if k:
            one.learn_one(x)
    got: list[float] = []
    a, sizes = 0, set()
    while a < len(values):
        b = min(len(values), a + many.stable_for())
        sizes.add(b - a)
        got += many.score_exact(values[a:b]).tolist()
        many.learn_exact([x for x, k in zip(values[a:b], keep[a:b], strict=True) if k])
        a = b
    assert got == want
    assert min(sizes) == 1 and max(sizes) > 30  # flat tails one at a time, then chunks
    for attr in ("n_", "_since", "_edge", "_scale", "_flat"):
        assert getattr(many, attr) == getattr(one, attr), attr
    assert np.array_equal(many.buf_, one.buf_) and np.array_equal(many._sorted, one._sorted)


def test_learn_exact_beyond_stable_for_learns_one_at_a_time() -> None:
    one, many = TailQuantile(refresh=10, min_count=5), TailQuantile(refresh=10, min_count=5)
    values = [float(v) for v in stream(4, 500)[-25:]]
    for x in values:
        one.learn_one(x)
    many.learn_exact(values)  # 25 > stable_for(): rescales where learn_one would
    assert np.array_equal(many._sorted, one._sorted) and many._since == one._since


def test_raw_exact_is_raw_for_every_row() -> None:
    comb = ScoreCombiner({"a": 1.0, "b": 2.0, "c": 0.5}, max_weight=0.7, mean_only=("c",))
    rng = np.random.default_rng(5)
    cal = {k: np.concatenate([rng.random(200), [0.0, 1.0, 0.5, 1 - 1e-15]]) for k in "abc"}
    cal.pop("b")  # a missing detector counts 0.5
    n = len(cal["a"])
    want = [comb.raw({k: float(v[i]) for k, v in cal.items()}) for i in range(n)]
    assert comb.raw_exact(cal, n).tolist() == want


def test_the_compiled_surprises_are_surprise_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    near_one = 1.0 - 10.0 ** -rng.uniform(0, 16, size=100_000)  # the tail, up to the cap
    edges = [0.0, -0.0, 0.5, 1.0, 1.5, -1e-300, -0.5, 1 - 1e-12, 1 - 1e-13, math.nan, math.inf]
    u = np.concatenate([rng.random(200_000), near_one, np.nextafter(near_one, 2.0), edges])
    got = surprises(u)
    want = np.array([surprise(x) for x in u.tolist()])
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # no -0.0 where surprise gives 0.0
