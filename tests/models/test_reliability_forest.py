"""The forest scorer gives scikit-learn's IsolationForest scores exactly (issue 14)."""

from __future__ import annotations

import pickle
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from models.reliability.forest import ForestDetector, ForestScorer, fit_forest


def data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[rng.random(n) < 0.1] = 0.0  # many ties at the baseline, as absent features give
    x[:, 0] = np.round(x[:, 0], 1)  # values on a grid: inputs equal to split thresholds
    return x


@pytest.mark.parametrize(
    ("n", "d", "trees", "max_samples", "max_features"),
    [(600, 5, 25, 256, 1.0), (2000, 12, 100, 256, 1.0), (300, 3, 10, 64, 1.0),
     (800, 6, 20, 128, 0.5), (50, 2, 5, 50, 1.0)],
)  # fmt: skip
def test_the_walk_gives_sklearns_scores_bit_for_bit(
    n: int, d: int, trees: int, max_samples: int, max_features: float
) -> None:
    train = data(n, d, seed=n)
    forest = IsolationForest(
        n_estimators=trees, max_samples=max_samples, max_features=max_features, random_state=3
    ).fit(train)
    test = np.vstack([data(700, d, seed=n + 1), 8 * data(50, d, seed=n + 2), train[:100]])
    test[0] = forest.estimators_[0].tree_.threshold[0]  # exactly on a split
    assert np.array_equal(ForestScorer(forest).score_samples(test), forest.score_samples(test))


def test_a_single_sample_forest_scores_like_sklearn() -> None:
    forest = IsolationForest(n_estimators=3, max_samples=1, random_state=0).fit(np.ones((1, 2)))
    x = data(5, 2, seed=1)
    assert np.array_equal(ForestScorer(forest).score_samples(x), forest.score_samples(x))


def test_the_detector_scores_with_the_scorer_and_rebuilds_it_after_a_refit() -> None:
    det = ForestDetector(n_features=4, window=512, refit_every=256, background=False, seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    for row in rng.normal(size=(600, 4)):
        det.learn_one(row)
    first = det.forest_
    assert det.score_many(x).tolist() == (-first.score_samples(x)).tolist()
    for row in rng.normal(size=(600, 4)):
        det.learn_one(row)
    assert det.forest_ is not first  # refitted: the cached scorer is the old forest's
    assert det.score_many(x).tolist() == (-det.forest_.score_samples(x)).tolist()
    restored = pickle.loads(pickle.dumps(det))
    assert restored._scorer is None  # not pickled, rebuilt when next scored
    assert restored.score_many(x).tolist() == det.score_many(x).tolist()


def test_features_added_after_the_fit_are_ignored_like_before() -> None:
    forest, _ = fit_forest(data(400, 3, seed=5), 0, 20, 256)
    det = ForestDetector(n_features=3, window=512, refit_every=10**9, background=False, seed=0)
    det.forest_ = forest
    det.resize(5)
    wide = data(100, 5, seed=6)
    assert np.array_equal(det.score_many(wide), -forest.score_samples(wide[:, :3]))


class SlowExecutor(ThreadPoolExecutor):
    """Fits finish after a random delay, as a busy worker's do."""

    def __init__(self, seed: int) -> None:
        super().__init__(max_workers=1)
        self.rng = random.Random(seed)

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        delay = self.rng.uniform(0.0, 0.03)

        def slow():  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return fn(*args, **kwargs)

        return super().submit(slow)


def run_swapping(det: ForestDetector, xs: np.ndarray, chunks: list[int]) -> list[tuple[int, float]]:
    """Learn ``xs`` in pieces of the given sizes (cycled), scoring a probe after each."""
    probe = data(8, xs.shape[1], 99)
    out, i, k = [], 0, 0
    while i < len(xs):
        n = chunks[k % len(chunks)]
        det.learn_many(xs[i : i + n])
        i, k = i + n, k + 1
        if i % 600 == 0:  # the same points of the stream whatever the pieces
            out.append((det.version_, float(det.score_many(probe).sum())))
    return out


def test_swap_after_installs_every_refit_at_its_learned_count_wherever_it_runs() -> None:
    """The record at which a refit is installed depends only on the records: background fits
    that finish late or early, inline fits, and a thread all give the same versions and
    scores at the same points."""
    xs = data(6000, 3, 7)
    kw = dict(n_features=3, window=1024, refit_every=900, min_fit=300, n_estimators=20, seed=2)
    inline = run_swapping(ForestDetector(background=False, swap_after=250, **kw), xs, [50])
    assert inline[-1][0] >= 5  # refits happened
    for chunks, executor in (([50], SlowExecutor(1)), ([30, 70], SlowExecutor(2)), ([50], None)):
        det = ForestDetector(background=True, swap_after=250, executor=executor, **kw)
        assert run_swapping(det, xs, chunks) == inline
    immediate = run_swapping(ForestDetector(background=False, **kw), xs, [50])
    assert immediate != inline  # installed 250 records later than without swap_after


def test_a_refit_still_queued_at_its_swap_point_is_fitted_there_not_waited_for() -> None:
    """A shared worker busy with other detectors' fits: the refit never starts there, and the
    loop fits it itself at the swap point (the same forest) instead of waiting in line."""
    xs = data(6000, 3, 7)
    kw = dict(n_features=3, window=1024, refit_every=900, min_fit=300, n_estimators=20, seed=2)
    inline = run_swapping(ForestDetector(background=False, swap_after=250, **kw), xs, [50])
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as busy:
        busy.submit(release.wait, 60)  # the one worker is taken for the whole run
        det = ForestDetector(background=True, swap_after=250, executor=busy, **kw)
        try:
            assert run_swapping(det, xs, [50]) == inline
        finally:
            release.set()
    assert det.refit_errors_ == 0
    assert det.waited_s_ > 0  # the fits' time, spent at the swap points


def test_a_checkpoint_taken_mid_refit_restarts_the_same_fit() -> None:
    xs = data(4000, 3, 8)
    kw = dict(n_features=3, window=1024, refit_every=700, min_fit=300, n_estimators=20, seed=3)
    whole = ForestDetector(background=True, swap_after=400, executor=SlowExecutor(3), **kw)
    whole.learn_many(xs[:1500])
    assert whole.pending_ is not None  # a refit is in flight at the checkpoint
    restored = pickle.loads(pickle.dumps(whole))
    assert restored.pending_ is not None and restored._future is None
    restored.set_executor(SlowExecutor(4))
    for det in (whole, restored):
        det.learn_many(xs[1500:])
    probe = data(20, 3, 5)
    assert restored.version_ == whole.version_
    assert np.array_equal(restored.score_many(probe), whole.score_many(probe))


def test_swap_after_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="swap_after"):
        ForestDetector(n_features=2, swap_after=-1)
