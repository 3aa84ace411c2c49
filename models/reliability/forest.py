"""scikit-learn IsolationForest behind the streaming contract, refit in the background.

The forest is a batch model; :class:`ForestDetector` makes it a streaming one:

* it keeps a sliding window (ring buffer) of recent *normal-looking* feature vectors;
* every ``refit_every`` learned records (or ``refit_interval_s`` seconds, by the injected
  ``clock``) it fits a new forest on a copy of the window. With ``background=True`` the fit
  runs off the scoring path: in the injected ``executor`` when there is one (the stream
  consumer passes a one-worker ``ProcessPoolExecutor`` (:func:`stream.workers.pool`), so the
  fit never competes with scoring for the GIL: the window goes out as a numpy array and the
  fitted forest comes back pickled, see :func:`fit_forest`), else in a worker thread. The
  finished forest replaces the old one in one reference assignment (atomic under the GIL) at
  the next call, and ``version_`` counts the swaps. With ``background=False`` the fit runs
  inline at deterministic learned-record counts (offline scoring and tests: deterministic
  for a given seed). A background refit fits the same forest (same window, same seed), only
  the batch at which it is swapped in depends on timing, unless ``swap_after`` is set: then a
  refit started at learned record ``C`` is installed exactly when the learned count reaches
  ``C + swap_after`` (waiting for it there if it is not finished; fitting it there itself if
  it has not even started, queued behind other detectors' fits in a shared worker), inline or
  in the background, so where the fit runs no longer changes any score (the stream consumer's
  default; a checkpoint keeps the pending refit's data and seed, and a restore starts it
  again);
* scoring is batched (:meth:`score_many`), and flipped: scikit-learn's ``score_samples`` is
  lower = more abnormal, ours is higher = more abnormal. Before the first fit every score is
  0. The fitted trees are walked by one compiled loop (:class:`ForestScorer`): the same float32
  inputs, leaves and sums in the same order as ``score_samples``, so the same scores bit for
  bit (``tests/models/test_reliability_forest.py`` checks it), without its per-tree joblib
  dispatch, which cost more than the trees (a quarter of the reliability consumer's time on
  an 80-link fleet).

The executor, the worker and the future are not pickled: a checkpoint taken during a refit
keeps the window and the current forest, and the refit simply runs again after a restore (the
caller re-attaches an executor with :meth:`ForestDetector.set_executor`). A refit that fails
(e.g. a broken process pool) is counted in ``refit_errors_``; a broken executor is dropped
(later refits use a thread) and the refit runs again when it is next due.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = ForestDetector(n_features=2, window=512, refit_every=256, background=False, seed=1)
>>> for row in rng.normal(size=(600, 2)):
...     det.learn_one(row)
>>> det.version_
1
>>> scores = det.score_many(np.vstack([rng.normal(size=(200, 2)), [[6.0, -6.0]]]))
>>> bool(scores[-1] > np.quantile(scores[:-1], 0.99))
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future

import numba
import numpy as np
from sklearn.ensemble import IsolationForest

__all__ = ["ForestDetector", "ForestScorer", "fit_forest"]


def fit_forest(
    data: np.ndarray, seed: int, n_estimators: int, max_samples: int
) -> tuple[IsolationForest, float]:
    """Fit one forest on ``data``; returns it and the seconds the fit took.

    Module-level (picklable by reference) so a process pool can run it: only ``data`` (a
    numpy array) goes to the worker and only the fitted forest comes back.
    """
    t0 = time.perf_counter()
    forest = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, len(data)),
        random_state=seed,
        n_jobs=1,
    ).fit(data)
    return forest, time.perf_counter() - t0


def warm_fit() -> None:
    """Fit a tiny forest once: a fresh worker process imports scikit-learn and runs its fitting
    code before the first real refit, which then costs what a refit costs. Module-level, so a
    process pool can run it."""
    fit_forest(np.zeros((16, 2)), 0, 2, 16)


class ForestScorer:
    """A fitted ``IsolationForest``, scored without its per-tree joblib dispatch.

    :meth:`score_samples` equals ``forest.score_samples(X)`` bit for bit: the input is cast to
    float32 as scikit-learn validates it, each row walks each tree as the trees' ``apply``
    does (a float32 value ``<=`` the float64 threshold goes left), and the per-tree path
    lengths are added in the estimators' order, exactly as
    ``IsolationForest._compute_score_samples`` does. The walk is one compiled loop over all the
    trees' nodes in flat arrays (:func:`_walk`), tree by tree over the rows, and level by level
    within a tree: every row takes one step down before any takes the next, so the rows' steps
    are independent work the processor overlaps (a leaf points at itself, so a row that
    reached one stays there without a branch). With 100 trees of 256 samples that is about
    1.5 us a row, against 3.9-4.4 us for one row's whole path after another (2026-12-07).
    """

    def __init__(self, forest: IsolationForest) -> None:
        from sklearn.ensemble._iforest import _average_path_length

        trees = [est.tree_ for est in forest.estimators_]
        lengths = [  # per node: its depth + the average path below it - 1
            depth + avg - 1.0
            for depth, avg in zip(
                forest._decision_path_lengths, forest._average_path_length_per_tree, strict=True
            )
        ]
        subsample = forest._max_features != forest.n_features_in_
        sizes = [t.node_count for t in trees]
        self.roots = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        # per node (global numbers): its children side by side, the column of x it splits (-1:
        # a leaf), its threshold, its path length
        children, features = [], []
        for k, t in enumerate(trees):
            r = self.roots[k]
            children.append(np.column_stack([t.children_left + r, t.children_right + r]))
            f = np.where(t.children_left == -1, -1, np.asarray(t.feature, dtype=np.int64))
            if subsample:  # the column of x each split reads
                f = np.where(f >= 0, np.asarray(forest.estimators_features_[k])[np.maximum(f, 0)], f)
            features.append(f)
        self.children = np.ascontiguousarray(np.concatenate(children), dtype=np.int32)
        self.feature = np.concatenate(features).astype(np.int32)
        leaves = np.flatnonzero(self.feature < 0)
        self.children[leaves] = leaves[:, None]  # a leaf's children are itself
        self.feature[leaves] = 0  # (any column: either way it stays)
        self.levels = max((t.max_depth for t in trees), default=0)
        self.threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        self.lengths = np.concatenate(lengths).astype(np.float64)
        self.denominator = len(trees) * _average_path_length([forest._max_samples])

    def score_samples(self, xs: np.ndarray) -> np.ndarray:
        """scikit-learn's ``score_samples`` (lower = more abnormal)."""
        x = np.ascontiguousarray(xs, dtype=np.float32)
        depths = _walk(
            x, self.roots, self.children, self.feature, self.threshold, self.lengths, self.levels
        )
        d = self.denominator
        return -(2 ** (-np.divide(depths, d, out=np.ones_like(depths), where=d != 0)))


@numba.njit(cache=True, nogil=True)
def _walk(x, roots, children, feature, threshold, lengths, levels):  # fmt: skip
    """Per row, the path lengths of its leaves added tree by tree (in the trees' order; tree
    by tree over all rows, so that a tree's nodes stay in the cache). Within a tree, ``levels``
    steps of every row in turn (leaves lead to themselves): a float32 value ``<=`` the
    threshold goes to the first child, anything else (also ``nan``) to the second."""
    n = x.shape[0]
    depths = np.zeros(n)
    node = np.empty(n, dtype=np.int64)
    for r in roots:
        node[:] = r
        for _ in range(levels):
            for i in range(n):
                at = node[i]
                node[i] = children[at, 0 if x[i, feature[at]] <= threshold[at] else 1]
        for i in range(n):
            depths[i] += lengths[node[i]]
    return depths


FIT_WAIT_S = 120.0
"""With ``swap_after``: longest wait for a background fit at its swap point; a worker that
takes longer counts as failed and the same forest is fitted inline."""


def _check_swap_after(swap_after: int | None) -> None:
    if swap_after is not None and swap_after < 0:
        raise ValueError(f"swap_after must be >= 0 or None, got {swap_after}")


class ForestDetector:
    """IsolationForest with a sliding window, periodic background refits and atomic swaps.

    Parameters
    ----------
    n_features
        Width of the feature vectors.
    window
        Most recent normal vectors the forest is fit on.
    refit_every
        Refit after this many learned vectors (the first fit once ``min_fit`` are in).
    refit_interval_s
        Also refit when this many seconds passed since the last refit (``None``: never).
    min_fit
        Vectors needed before the first fit.
    n_estimators, max_samples
        Passed to :class:`sklearn.ensemble.IsolationForest`.
    background
        Fit off the scoring path (``True``: in ``executor``, else a worker thread) or inline
        (``False``, deterministic).
    executor
        Where background fits run (e.g. a ``ProcessPoolExecutor``); ``None``: a thread.
        Not pickled.
    seed
        Seed of every forest (refit ``k`` uses ``seed + k``).
    clock
        Monotonic clock for ``refit_interval_s`` (injectable for tests).
    swap_after
        ``None``: a background refit is swapped in when it is ready (timing decides the
        record). A number ``D``: every refit, inline or background, is installed when ``D``
        more records have been learned since it started, so the answers depend only on the
        records (a background fit that is not ready by then is waited for).
    """

    def __init__(
        self,
        n_features: int,
        window: int = 4096,
        refit_every: int = 20_000,
        refit_interval_s: float | None = None,
        min_fit: int = 512,
        n_estimators: int = 100,
        max_samples: int = 256,
        background: bool = True,
        executor: Executor | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        swap_after: int | None = None,
    ) -> None:
        _check_swap_after(swap_after)
        self.n_features = n_features
        self.window = window
        self.refit_every = refit_every
        self.refit_interval_s = refit_interval_s
        self.min_fit = min_fit
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.background = background
        self.executor = executor
        self.seed = seed
        self.clock = clock
        self.swap_after = swap_after
        self.buf_ = np.zeros((window, n_features))
        self.n_seen_ = 0
        self.since_fit_ = 0
        self.forest_: IsolationForest | None = None
        self._scorer: tuple[IsolationForest, ForestScorer] | None = None  # forest_ scorer, cached
        self.version_ = 0
        self.last_fit_at_: float | None = None
        self.fit_seconds_: list[float] = []
        self.refit_errors_ = 0
        self.last_error_ = ""
        self._future: Future[tuple[IsolationForest, float]] | None = None
        # with swap_after: the refit in flight as (window copy, seed, learned count to install
        # at); kept in checkpoints so that a restore starts the same fit again
        self.pending_: tuple[np.ndarray, int, int] | None = None
        self.waited_s_ = 0.0  # time the loop spent at swap points (waiting, or fitting itself)

    def resize(self, n_features: int) -> None:
        """Widen the vectors to ``n_features`` (new columns are 0 in the window).

        A forest fit on fewer columns scores the first ones it knows until the next refit.
        """
        if n_features < self.n_features:
            raise ValueError(f"cannot narrow {self.n_features} features to {n_features}")
        extra = n_features - self.n_features
        if extra:
            self.buf_ = np.hstack([self.buf_, np.zeros((self.window, extra))])
            self.n_features = n_features

    def run_where(self, background: bool, swap_after: int | None) -> None:
        """Where later refits run (a restored forest follows the run's settings, not those of
        the run that saved it), and ``swap_after`` for a forest that installs refits when they
        are ready; one that installs them at fixed points (a refit may be pending) keeps its
        points, inline or in the background alike."""
        _check_swap_after(swap_after)
        self.background = background
        if self.swap_after is None:
            self.swap_after = swap_after

    def set_executor(self, executor: Executor | None) -> None:
        """Run later background refits in ``executor`` (``None``: a worker thread)."""
        self.executor = executor

    # -- learning -----------------------------------------------------------------------------
    def learn_one(self, x: np.ndarray) -> None:
        """Add one normal-looking vector to the window; maybe start a refit."""
        self.buf_[self.n_seen_ % self.window] = x
        self.n_seen_ += 1
        self.since_fit_ += 1
        self.maybe_refit()

    def learn_many(self, xs: np.ndarray) -> None:
        """Add many vectors (rows) at once; maybe start a refit."""
        xs = np.asarray(xs, dtype=float).reshape(-1, self.n_features)
        for start in range(0, len(xs), self.window):
            chunk = xs[start : start + self.window]
            idx = (self.n_seen_ + np.arange(len(chunk))) % self.window
            self.buf_[idx] = chunk
            self.n_seen_ += len(chunk)
            self.since_fit_ += len(chunk)
        self.maybe_refit()

    def maybe_refit(self) -> bool:
        """Swap in a finished refit; start a new one when due. True if one started."""
        if self.swap_after is None:
            self._swap_if_done()
        else:
            self._swap_when_due()
        if self._future is not None or self.pending_ is not None or self.n_seen_ < self.min_fit:
            return False
        due = self.forest_ is None or self.since_fit_ >= self.refit_every
        if not due and self.refit_interval_s is not None and self.last_fit_at_ is not None:
            due = self.clock() - self.last_fit_at_ >= self.refit_interval_s
        if not due:
            return False
        data = self.buf_[: min(self.n_seen_, self.window)].copy()
        seed = self.seed + self.version_ + 1
        self.since_fit_ = 0
        self.last_fit_at_ = self.clock()
        if self.swap_after is not None:
            self.pending_ = (data, seed, self.n_seen_ + self.swap_after)
            if self.background:
                self._submit(data, seed)
            self._swap_when_due()  # swap_after=0: at once
            return True
        if not self.background:
            self._install(self._fit(data, seed))
            return True
        self._submit(data, seed)
        return True

    def _submit(self, data: np.ndarray, seed: int) -> None:
        """Start fitting ``data`` with ``seed`` in the executor, or else in a worker thread."""
        if self.executor is not None:
            try:
                self._future = self.executor.submit(
                    fit_forest, data, seed, self.n_estimators, self.max_samples
                )
                return
            except (BrokenExecutor, RuntimeError) as exc:  # broken or shut down: use a thread
                self._failed(exc)
                self.executor = None
        fut: Future[tuple[IsolationForest, float]] = Future()

        def work() -> None:
            try:
                fut.set_result((self._fit(data, seed), -1.0))  # _fit timed itself
            except BaseException as exc:  # reported at the swap
                fut.set_exception(exc)

        fut.set_running_or_notify_cancel()  # the thread starts at once: never cancelled
        self._future = fut
        threading.Thread(target=work, name="iforest-refit", daemon=True).start()

    def _swap_when_due(self) -> None:
        """With ``swap_after``: install the pending refit once its learned count is reached,
        waiting for a background fit there; a fit that failed is redone inline (the same
        forest), so the record at which it is installed never depends on timing."""
        pending = self.pending_
        if pending is None:
            return
        data, seed, at = pending
        if self.background and self._future is None:  # restored from a checkpoint mid-refit
            self._submit(data, seed)
        if self.n_seen_ < at:
            return
        fut, self._future, self.pending_ = self._future, None, None
        forest: IsolationForest | None = None
        t0 = time.perf_counter()
        if fut is not None and fut.cancel():
            fut = None  # still queued behind other shards' fits: fitted here, not waited for
        if fut is not None:
            try:
                forest, secs = fut.result(timeout=FIT_WAIT_S)
                if secs >= 0:
                    self._timed(secs)
            except BaseException as exc:  # noqa: BLE001 - counted (a hung worker too), fitted here
                self._failed(exc)
                if isinstance(exc, BrokenExecutor):
                    self.executor = None
        self._install(forest if forest is not None else self._fit(data, seed))
        self.waited_s_ += time.perf_counter() - t0

    def _fit(self, data: np.ndarray, seed: int) -> IsolationForest:
        forest, secs = fit_forest(data, seed, self.n_estimators, self.max_samples)
        self._timed(secs)
        return forest

    def _timed(self, secs: float) -> None:
        self.fit_seconds_.append(secs)
        del self.fit_seconds_[:-20]

    def _install(self, forest: IsolationForest) -> None:
        self.forest_ = forest  # one reference assignment: scorers see the old or the new forest
        self.version_ += 1

    def _failed(self, exc: BaseException) -> None:
        self.refit_errors_ += 1
        self.last_error_ = f"{type(exc).__name__}: {exc}"  # retried when due again

    def _swap_if_done(self) -> None:
        fut = self._future
        if fut is None or not fut.done():
            return
        self._future = None
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self._failed(exc or RuntimeError("refit cancelled"))
            if isinstance(exc, BrokenExecutor):
                self.executor = None
            return
        forest, secs = fut.result()
        if secs >= 0:
            self._timed(secs)
        self._install(forest)

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running refit finished and is swapped in (tests, shutdown); with
        ``swap_after`` it only finishes: it is still installed at its learned count."""
        fut = self._future
        if fut is not None:
            fut.exception(timeout)
            if self.swap_after is None:
                self._swap_if_done()

    @property
    def refitting(self) -> bool:
        """True while a background refit runs."""
        return self._future is not None and not self._future.done()

    # -- scoring ------------------------------------------------------------------------------
    def score_many(self, xs: np.ndarray) -> np.ndarray:
        """Anomaly scores of many vectors (rows), higher = more anomalous; 0 before a fit."""
        if self.swap_after is None:
            self._swap_if_done()
        xs = np.asarray(xs, dtype=float).reshape(-1, self.n_features)
        forest = self.forest_
        if forest is None or len(xs) == 0:
            return np.zeros(len(xs))
        known = forest.n_features_in_
        if known < xs.shape[1]:  # features added since the fit: not in these trees yet
            xs = xs[:, :known]
        scorer = self._scorer
        if scorer is None or scorer[0] is not forest:
            scorer = self._scorer = (forest, ForestScorer(forest))
        return -scorer[1].score_samples(xs)  # sklearn: lower = more abnormal; flip it here only

    def score_one(self, x: np.ndarray) -> float:
        """Anomaly score of one vector."""
        return float(self.score_many(np.asarray(x, dtype=float).reshape(1, -1))[0])

    # -- pickling -----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_future"] = None
        state["executor"] = None
        state["clock"] = None
        state["_scorer"] = None  # the scorer is rebuilt from forest_ when next scored
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("executor", None)
        state.setdefault("_scorer", None)
        state.setdefault("refit_errors_", 0)
        state.setdefault("last_error_", "")
        state.setdefault("swap_after", None)
        state.setdefault("pending_", None)
        state.setdefault("waited_s_", 0.0)
        self.__dict__.update(state)
        if self.clock is None:
            self.clock = time.monotonic
