"""river Half-Space Trees on z-score features squashed into [0, 1], protected from anomalies.

Half-Space Trees need features in [0, 1]. Our features are z-scores against each node's own
baseline (:mod:`models.reliability.features`), which have *known limits* after squashing:
``u = 0.5 + 0.5 * tanh(z / scale)`` maps z = 0 to 0.5 and +-infinity to 1 / 0, so no
streaming min-max scaler is needed (and none can be fooled by one early outlier).

The detector is scored, then learns, one record at a time; records whose score is at or
above ``protect_above`` are not learned, so an incident does not teach the trees that it is
normal (river's ``protect_anomaly_detector``, kept outside the scorer).

**Batches, with river's exact scores.** With named ``features`` (as the reliability detector
uses it), :meth:`HSTDetector.score_learn_many` scores and learns a whole batch with numpy and
gives the scores river's ``HalfSpaceTrees`` gives one record at a time, bit for bit
(``tests/models/test_reliability_hst.py`` checks it against river). The trees are river's: the
first learned record goes through river, which builds them; they are then copied into arrays
(complete binary trees, node ``i``'s children at ``2i + 1`` and ``2i + 2``). It is exact
because within a window a score reads only the reference masses (``r_mass``), which change only
at a window's pivot: a batch is scored in pieces of at most the rows the window still needs
(its pivot can come no earlier), and each piece is learned, pivoting when it completes the
window. Each split ``squash(z) < threshold`` is turned once into ``z < boundary`` (the boundary
found by bisection over the floats, with ``math.tanh`` itself), so the hot path computes no
``tanh`` at all, and masses are integers, so sums are exact in any order.

Examples
--------
>>> import random
>>> rng = random.Random(0)
>>> det = HSTDetector(n_trees=10, height=6, window_size=100, seed=1)
>>> for _ in range(600):
...     det.learn_one({"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)})
>>> normal = [det.score_one({"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}) for _ in range(200)]
>>> outlier = det.score_one({"a": 9.0, "b": -9.0})
>>> outlier > sorted(normal)[-10]     # beyond the 95th percentile of normal records
True
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numba
import numpy as np
from river.anomaly import HalfSpaceTrees

__all__ = ["HSTDetector", "squash"]


def squash(z: float, scale: float = 4.0) -> float:
    """Map a z-score onto [0, 1] with known limits (0 -> 0.5).

    >>> squash(0.0), round(squash(4.0), 3), round(squash(-40.0), 3)
    (0.5, 0.881, 0.0)
    """
    return 0.5 + 0.5 * math.tanh(z / scale)


class HSTDetector:
    """river ``HalfSpaceTrees`` over squashed z-score features, with protection.

    Parameters
    ----------
    n_trees, height, window_size
        Passed to :class:`river.anomaly.HalfSpaceTrees`.
    scale
        z-scores are squashed with ``tanh(z / scale)``.
    protect_above
        Raw HST scores at or above this are not learned (``None``: learn everything).
    features
        Names of the features to use (``None``: every feature the record carries; features
        missing from a record are taken as 0.5, the squashed baseline). With names, the trees
        live in arrays once built and batches are scored with numpy (see the module
        docstring); without, each record goes through river.
    seed
        Seed of the trees.
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        scale: float = 4.0,
        protect_above: float | None = 0.9,
        features: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.scale = scale
        self.protect_above = protect_above
        self.features = tuple(features) if features is not None else None
        self.seed = seed
        self.model_: HalfSpaceTrees | None = HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.n_learned_ = 0
        self.n_protected_ = 0
        self.trees_: _Trees | None = None  # the trees as arrays, once built (named features)
        self.learned_after_ = np.zeros(0, dtype=np.int64)  # see score_learn_many

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("trees_", None)
        state.setdefault("learned_after_", np.zeros(0, dtype=np.int64))
        self.__dict__.update(state)
        model = self.model_
        if self.features is not None and self.trees_ is None and model is not None and model.trees:
            self._to_arrays()  # a checkpoint from before the arrays: same trees, same masses

    def _x(self, z: Mapping[str, float]) -> dict[str, float]:
        s = self.scale
        if self.features is None:
            return {k: 0.5 + 0.5 * math.tanh(v / s) for k, v in z.items()}
        return {k: 0.5 + 0.5 * math.tanh(z.get(k, 0.0) / s) for k in self.features}

    def _vector(self, z: Mapping[str, float]) -> np.ndarray:
        assert self.features is not None
        return np.array([[z.get(k, 0.0) for k in self.features]], dtype=float)

    def score_one(self, z: Mapping[str, float]) -> float:
        """Anomaly score in [0, 1] of one feature dict (higher = more anomalous)."""
        if self.trees_ is not None:
            return float(self.trees_.score(self._vector(z))[0][0])
        assert self.model_ is not None
        return float(self.model_.score_one(self._x(z)))

    def learn_one(self, z: Mapping[str, float], score: float | None = None) -> None:
        """Learn one feature dict unless its score (given or computed) is protected."""
        if self.protect_above is not None:
            if score is None:
                score = self.score_one(z)
            if score >= self.protect_above:
                self.n_protected_ += 1
                return
        if self.trees_ is not None:
            self.trees_.learn(self._vector(z), np.ones(1, dtype=bool))
        else:
            self._river_learn(self._x(z))
        self.n_learned_ += 1

    def score_learn_one(self, z: Mapping[str, float]) -> float:
        """Score, then learn (unless protected); returns the score."""
        if self.features is not None:
            return float(self.score_learn_many(self._vector(z))[0])
        return self._river_score_learn(self._x(z))

    def score_learn_many(self, zs: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        """Score, then learn (unless protected), each row of ``zs`` in order: the z-scores in
        ``features`` order (absent = 0). The scores equal :meth:`score_learn_one`'s, one row
        at a time (rows where ``skip`` is True: :meth:`score_one`'s, and they are not learned
        nor counted as protected). ``learned_after_`` holds ``n_learned_`` as it was after
        each row."""
        if self.features is None:
            raise ValueError("score_learn_many needs named features")
        n = len(zs)
        out = np.zeros(n)
        after = self.learned_after_ = np.zeros(n, dtype=np.int64)
        i = 0
        while i < n and self.trees_ is None:  # river builds the trees at the first learn
            x = self._x(dict(zip(self.features, zs[i], strict=True)))
            if skip is not None and skip[i]:
                assert self.model_ is not None
                out[i] = float(self.model_.score_one(x))
            else:
                out[i] = self._river_score_learn(x)
            after[i] = self.n_learned_
            i += 1
        trees = self.trees_
        protect = self.protect_above
        while i < n and trees is not None:
            # at most the rows the window still needs: its pivot comes at the need-th learned
            # row at the earliest, so every row here is scored with the masses it should be
            end = min(n, i + self.window_size - trees.counter)
            scores, paths = trees.score(zs[i:end])
            learned = scores < protect if protect is not None else np.ones(len(scores), bool)
            protected = ~learned
            if skip is not None:  # neither learned nor protected: not the trees' business
                keep = ~skip[i:end]
                learned &= keep
                protected &= keep
            cum = np.cumsum(learned)
            out[i:end] = scores
            after[i:end] = self.n_learned_ + cum
            trees.learn_paths(paths, learned)
            self.n_learned_ += int(cum[-1])
            self.n_protected_ += int(np.count_nonzero(protected))
            i = end
        return out

    def _river_score_learn(self, x: dict[str, float]) -> float:
        """Score one squashed record with river, then learn it unless protected."""
        assert self.model_ is not None
        score = float(self.model_.score_one(x))
        if self.protect_above is not None and score >= self.protect_above:
            self.n_protected_ += 1
        else:
            self._river_learn(x)
            self.n_learned_ += 1
        return score

    def _river_learn(self, x: dict[str, float]) -> None:
        assert self.model_ is not None
        self.model_.learn_one(x)
        if self.features is not None and self.model_.trees:
            self._to_arrays()

    def _to_arrays(self) -> None:
        assert self.model_ is not None and self.features is not None
        self.trees_ = _Trees.from_river(self.model_, self.features, self.scale)
        self.model_ = None  # the arrays hold the masses from now on


class _Trees:
    """River's padded trees as arrays: split column, split boundary (in z), masses."""

    def __init__(
        self,
        column: np.ndarray,
        boundary: np.ndarray,
        r_mass: np.ndarray,
        l_mass: np.ndarray,
        height: int,
        window_size: int,
        counter: int,
        first_window: bool,
    ) -> None:
        self.column, self.boundary = column, boundary  # (trees, internal nodes)
        self.r_mass, self.l_mass = r_mass, l_mass  # (trees, all nodes), int64
        self.height, self.window_size = height, window_size
        self.counter, self.first_window = counter, first_window
        self.max_score = len(column) * window_size * (2 ** (height + 1) - 1)  # river's

    @classmethod
    def from_river(cls, model: HalfSpaceTrees, features: tuple[str, ...], scale: float) -> _Trees:
        h, t = model.height, len(model.trees)
        internal, total = 2**h - 1, 2 ** (h + 1) - 1
        column = np.zeros((t, internal), dtype=np.intp)
        boundary = np.zeros((t, internal))
        r_mass = np.zeros((t, total), dtype=np.int64)
        l_mass = np.zeros((t, total), dtype=np.int64)
        index = {name: i for i, name in enumerate(features)}
        for k, root in enumerate(model.trees):
            stack = [(root, 0)]
            while stack:
                node, i = stack.pop()
                r_mass[k, i], l_mass[k, i] = node.r_mass, node.l_mass
                if i < internal:
                    column[k, i] = index[node.feature]
                    boundary[k, i] = _z_boundary(node.threshold, scale)
                    left, right = node.children
                    stack += [(left, 2 * i + 1), (right, 2 * i + 2)]
        return cls(
            column, boundary, r_mass, l_mass, h, model.window_size, model.counter,
            model._first_window,
        )  # fmt: skip

    def score(self, zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """River's score of every row (with the current reference masses) and each row's
        path, ``(height + 1, trees, rows)`` node indices (one compiled loop: :func:`_score`)."""
        zs = np.ascontiguousarray(zs, dtype=np.float64)
        return _score(zs, self.column, self.boundary, self.r_mass, self.height,
                      self.first_window, 0.1 * self.window_size, self.max_score)  # fmt: skip

    def learn_paths(self, paths: np.ndarray, learned: np.ndarray) -> None:
        """Add the learned rows' paths to the latest masses, pivoting at the window's end
        (the caller never passes rows beyond the one that completes a window)."""
        k = int(learned.sum())
        if k:
            _add_paths(self.l_mass, paths, np.ascontiguousarray(learned, dtype=np.bool_))
        self.counter += k
        if self.counter >= self.window_size:
            self.r_mass, self.l_mass = self.l_mass, np.zeros_like(self.l_mass)
            self.first_window = False
            self.counter = 0

    def learn(self, zs: np.ndarray, learned: np.ndarray) -> None:
        self.learn_paths(self.score(zs)[1], learned)


@numba.njit(cache=True, nogil=True)
def _score(zs, column, boundary, r_mass, height, first_window, limit, max_score):  # fmt: skip
    """Each row's path down each tree (a z below the node's boundary goes left) and, once the
    first window is complete, river's score: 1 - (the reference masses along the path, each
    times 2 ** depth, down to the first node under ``limit``) / ``max_score``."""
    t, n = column.shape[0], zs.shape[0]
    paths = np.zeros((height + 1, t, n), dtype=np.intp)
    scores = np.zeros(n)
    for i in range(n):
        total = 0
        for k in range(t):
            node = 0
            for d in range(height):
                node = 2 * node + 1 if zs[i, column[k, node]] < boundary[k, node] else 2 * node + 2
                paths[d + 1, k, i] = node
            if not first_window:
                for d in range(height + 1):
                    r = r_mass[k, paths[d, k, i]]
                    total += r << d
                    if r < limit:
                        break
        if not first_window:
            scores[i] = 1 - total / max_score
    return scores, paths


@numba.njit(cache=True, nogil=True)
def _add_paths(l_mass, paths, learned):  # fmt: skip
    """Count the learned rows' paths into the latest masses."""
    for k in range(paths.shape[1]):
        for i in range(paths.shape[2]):
            if learned[i]:
                for d in range(paths.shape[0]):
                    l_mass[k, paths[d, k, i]] += 1


def _ordered(x: float) -> int:
    """The float's rank among all floats (monotone in the float's value)."""
    b = struct.unpack("<q", struct.pack("<d", x))[0]
    return b if b >= 0 else -(b & 0x7FFFFFFFFFFFFFFF)


def _from_ordered(i: int) -> float:
    b = i if i >= 0 else (-i) | -0x8000000000000000
    return float(struct.unpack("<d", struct.pack("<q", b))[0])


def _z_boundary(threshold: float, scale: float) -> float:
    """The smallest float ``z`` with ``squash(z, scale) >= threshold`` (computed exactly as
    :meth:`HSTDetector._x` does), so that ``squash(z) < threshold`` iff ``z < boundary``.

    >>> b = _z_boundary(0.7, 4.0)
    >>> squash(b) >= 0.7 > squash(np.nextafter(b, -np.inf))
    True
    """
    lo, hi = _ordered(-1e308), _ordered(1e308)  # squash(lo) = 0 < threshold <= 1 = squash(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 0.5 + 0.5 * math.tanh(_from_ordered(mid) / scale) >= threshold:
            hi = mid
        else:
            lo = mid
    return _from_ordered(hi)
