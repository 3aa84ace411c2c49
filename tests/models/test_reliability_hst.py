"""The batch Half-Space Trees give river's scores exactly (issue 14, item 2)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from models.reliability.hst import HSTDetector

NAMES = ("a", "b", "c", "d")


def z_rows(n: int, seed: int = 0) -> np.ndarray:
    """Normal rows with bursts of outliers (some protected, some not) and exact zeros."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(NAMES)))
    burst = rng.random(n) < 0.03
    z[burst] *= 25.0
    z[rng.random(n) < 0.05, 1] = 0.0  # an absent feature reads 0
    return z


def river_scores(
    z: np.ndarray,
    protect: float | None = 0.9,
    window: int = 50,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """River one record at a time, as HSTDetector's per-record path used it (rows where
    ``skip`` is True are scored, never learned)."""
    model = HalfSpaceTrees(n_trees=6, height=5, window_size=window, seed=3)
    out = []
    for i, row in enumerate(z):
        x = {k: 0.5 + 0.5 * math.tanh(float(v) / 4.0) for k, v in zip(NAMES, row, strict=True)}
        s = float(model.score_one(x))
        if (protect is None or s < protect) and (skip is None or not skip[i]):
            model.learn_one(x)
        out.append(s)
    return np.array(out)


def ours(protect: float | None = 0.9, window: int = 50) -> HSTDetector:
    return HSTDetector(
        n_trees=6, height=5, window_size=window, seed=3, features=NAMES, protect_above=protect
    )


@pytest.mark.parametrize("batch", [1, 7, 49, 50, 51, 333, 2000])
@pytest.mark.parametrize("protect", [0.9, 0.6, None])
def test_batches_give_rivers_scores_bit_for_bit(batch: int, protect: float | None) -> None:
    z = z_rows(2000)
    want = river_scores(z, protect)
    det = ours(protect)
    got = np.concatenate([det.score_learn_many(z[i : i + batch]) for i in range(0, len(z), batch)])
    assert np.array_equal(got, want)
    # the protection really skipped records (as many as river), the windows turned over
    skipped = int((want >= protect).sum()) if protect is not None else 0
    assert det.n_protected_ == skipped and (protect is None or skipped > 0)
    assert det.n_learned_ + det.n_protected_ == len(z)
    assert det.trees_ is not None and not det.trees_.first_window


@pytest.mark.parametrize("batch", [1, 37, 500])
def test_skipped_rows_are_scored_and_never_learned(batch: int) -> None:
    # the reliability detector skips links to a dead peer; skipped rows start the stream too,
    # before river has built the trees
    z = z_rows(1500, seed=4)
    skip = np.random.default_rng(5).random(len(z)) < 0.2
    skip[:3] = True
    want = river_scores(z, 0.9, skip=skip)
    assert not np.array_equal(want, river_scores(z, 0.9))  # skipping changes the masses
    det = ours(0.9)
    got = np.concatenate(
        [
            det.score_learn_many(z[i : i + batch], skip[i : i + batch])
            for i in range(0, len(z), batch)
        ]
    )
    assert np.array_equal(got, want)
    protected = int(((want >= 0.9) & ~skip).sum())
    assert det.n_protected_ == protected > 0
    assert det.n_learned_ + det.n_protected_ == int((~skip).sum())


def test_per_record_calls_share_the_arrays() -> None:
    z = z_rows(600, seed=1)
    want = river_scores(z)
    det = ours()
    got = []
    for i, row in enumerate(z):
        zd = {k: float(v) for k, v in zip(NAMES, row, strict=True)}
        if i % 3 == 0:
            got.append(det.score_learn_one(zd))
        else:  # score, then learn with the score given: what score_learn_one does
            s = det.score_one(zd)
            det.learn_one(zd, score=s)
            got.append(s)
    assert np.array_equal(np.array(got), want)


def test_a_checkpoint_keeps_scoring_the_same() -> None:
    z = z_rows(900, seed=2)
    want = river_scores(z)
    det = ours()
    first = det.score_learn_many(z[:400])
    det = pickle.loads(pickle.dumps(det))
    assert np.array_equal(np.concatenate([first, det.score_learn_many(z[400:])]), want)


def test_a_checkpoint_from_before_the_arrays_restores_into_them() -> None:
    z = z_rows(900, seed=4)
    want = river_scores(z)
    old = ours()
    # the old layout: river's trees and masses in model_, no arrays
    model = HalfSpaceTrees(n_trees=6, height=5, window_size=50, seed=3)
    for row in z[:400]:
        x = {k: 0.5 + 0.5 * math.tanh(float(v) / 4.0) for k, v in zip(NAMES, row, strict=True)}
        if float(model.score_one(x)) < 0.9:
            model.learn_one(x)
    state = dict(old.__dict__, model_=model)
    del state["trees_"]
    restored = HSTDetector.__new__(HSTDetector)
    restored.__setstate__(state)
    assert restored.trees_ is not None and restored.model_ is None
    assert np.array_equal(restored.score_learn_many(z[400:]), want[400:])


def test_unnamed_features_stay_on_river() -> None:
    det = HSTDetector(n_trees=3, height=4, window_size=20, seed=0)
    for row in z_rows(100):
        det.learn_one({k: float(v) for k, v in zip(NAMES, row, strict=True)})
    assert det.trees_ is None and det.model_ is not None
    with pytest.raises(ValueError, match="named features"):
        det.score_learn_many(z_rows(3))
