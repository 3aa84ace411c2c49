"""Per-link linear structure of the metrics: how badly a record fits its link's principal
components (PCA reconstruction error), a detector component beside the trees and the forest.

Metrics of one server move together (CPU with requests, network with throughput): a record
can keep every metric inside its usual range and still break how they move together, which a
per-metric z-score or a tree on z-scores hardly sees. For each key (a node's link, or a node),
:class:`LinkResidual` keeps its recent normal rows of transformed metric values, standardises
them by that window's mean and spread, fits a PCA keeping ``variance`` of it, and scores a row
by its squared residual outside those components **divided by the window's mean residual**: 1
is a typical fit on every key, so one fleet-wide calibrator can rank all of them.

Learning happens only through :meth:`LinkResidual.learn_many` and refits only in
:meth:`LinkResidual.refit` (the detector calls both at its fixed step boundaries), so scores
do not depend on how the stream is cut into batches. A key scores ``nan`` (no opinion) until
it has ``min_rows`` normal rows.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = rng.normal(size=(600, 1))
>>> rows = np.hstack([t, 2 * t, -t]) + 0.05 * rng.normal(size=(600, 3))  # one factor
>>> res = LinkResidual(min_rows=200, refit_every=200)
>>> res.learn_many(["a"] * 600, rows)
>>> res.refit()
1
>>> typical, broken = res.score_many(["a", "a"], np.array([[1.0, 2.0, -1.0], [1.0, -2.0, -1.0]]))
>>> bool(typical < 3.0), bool(broken > 100.0)
(True, True)
>>> bool(np.isnan(res.score_many(["b"], np.array([[0.0, 0.0, 0.0]]))[0]))
True
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

__all__ = ["LinkResidual"]


@dataclass
class _Fit:
    mean: np.ndarray
    scale: np.ndarray
    basis: np.ndarray  # d x k, orthonormal columns
    typical: float  # mean residual energy of the window it was fitted on


class _Window:
    """The last ``maxlen`` rows of one key, oldest first, in one matrix used as a ring (grown
    up to ``maxlen`` rows, widened when a wider row comes): rows narrower than the matrix are
    padded with ``nan`` and each row's width is kept, so iterating gives the rows as they were
    learned. Appended rows wait as blocks (a key's rows of one batch at a time) and go into the
    matrix together (one concatenation and one write) when the window is read: a refit reads
    it whole and a checkpoint pickles it as one copy, where a deque of rows took a Python step
    per row."""

    __slots__ = ("data", "sizes", "start", "count", "maxlen", "pending", "n_pending")

    def __init__(self, maxlen: int, rows: Iterable[np.ndarray] = ()) -> None:
        self.maxlen = maxlen
        self.data = np.full((0, 0), np.nan)
        self.sizes = np.zeros(0, dtype=np.int64)
        self.start = self.count = 0
        self.pending: list[np.ndarray] = []  # blocks of rows (2-d), oldest first
        self.n_pending = 0
        for row in rows:
            self.append(row)

    def append(self, row: np.ndarray) -> None:
        self.extend(np.asarray(row)[None, :])

    def extend(self, block: np.ndarray) -> None:
        """Append the rows of ``block`` (2-d, one width), oldest first."""
        self.pending.append(block)
        self.n_pending += len(block)

    def __len__(self) -> int:
        return min(self.count + self.n_pending, self.maxlen)

    def _fold(self) -> None:
        """Write the pending rows into the ring."""
        blocks, self.pending, self.n_pending = self.pending, [], 0
        if not blocks:
            return
        widths = [b.shape[1] for b in blocks]
        sizes = np.repeat(np.array(widths, dtype=np.int64), [len(b) for b in blocks])
        width = int(sizes.max()) if sizes.size else 0
        if min(widths) == width:
            block = np.concatenate(blocks).astype(float, copy=False)
        else:
            block = np.full((len(sizes), width), np.nan)
            at = 0
            for b in blocks:
                block[at : at + len(b), : b.shape[1]] = b
                at += len(b)
        block, sizes = block[-self.maxlen :], sizes[-self.maxlen :]
        if not len(block):
            return
        k = len(block)
        cap, have = self.data.shape
        if width > have:  # the feature set grew: every older row is nan there
            wider = np.full((cap, width), np.nan)
            wider[:, :have] = self.data
            self.data = wider
        elif width < have:
            block = np.hstack([block, np.full((k, have - width), np.nan)])
        need = min(self.count + k, self.maxlen)
        if need > cap:  # grow (at least doubling, at most maxlen), oldest first
            grown = np.full((min(max(2 * cap, need, 64), self.maxlen), self.data.shape[1]), np.nan)
            grown_sizes = np.zeros(len(grown), dtype=np.int64)
            order = self._order()
            grown[: self.count] = self.data[order]
            grown_sizes[: self.count] = self.sizes[order]
            self.data, self.sizes, self.start, cap = grown, grown_sizes, 0, len(grown)
        slots = (self.start + self.count + np.arange(k)) % cap  # the oldest go first when full
        self.data[slots] = block
        self.sizes[slots] = sizes
        total = self.count + k
        if total > cap:
            self.start = (self.start + total - cap) % cap
        self.count = min(total, cap)

    def _order(self) -> np.ndarray:
        return (self.start + np.arange(self.count)) % max(len(self.data), 1)

    def __getitem__(self, i: int) -> np.ndarray:
        self._fold()
        if not -self.count <= i < self.count:
            raise IndexError(i)
        j = (self.start + i % self.count) % len(self.data)
        return self.data[j, : self.sizes[j]]

    def __iter__(self) -> Iterator[np.ndarray]:
        self._fold()
        return (self[i] for i in range(self.count))

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows, oldest first, padded with ``nan`` to the widest of them (a copy), and
        each row's width."""
        self._fold()
        order = self._order()
        sizes = self.sizes[order]
        width = int(sizes.max()) if self.count else 0
        end = self.start + self.count
        if end <= len(self.data):
            return self.data[self.start : end, :width].copy(), sizes
        # wrapped: the two runs of the ring, copied (a gather by index took 10x as long)
        first, rest = self.data[self.start :, :width], self.data[: end - len(self.data), :width]
        return np.concatenate([first, rest]), sizes


@dataclass
class _Key:
    rows: _Window
    new: int = 0  # rows learned since the last fit
    fit: _Fit | None = None
    fits: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # the window as one matrix (rows padded with nan to the widest) and each row's width:
        # pickled row by row, the bench fleet's 80 windows took 211 ms instead of 22 ms
        matrix, sizes = self.rows.padded()
        return {"matrix": matrix, "sizes": sizes, "maxlen": self.rows.maxlen, "new": self.new,
                "fit": self.fit, "fits": self.fits}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "matrix" not in state:  # pickled before 2026-12-07: the dataclass' own fields
            old = state["rows"]  # a deque of rows
            self.__dict__.update(state)
            self.rows = _Window(old.maxlen, old)
            return
        matrix, sizes = state["matrix"], state["sizes"].tolist()
        rows = (matrix[i, :n] for i, n in enumerate(sizes))
        self.rows = _Window(state["maxlen"], rows)
        self.new, self.fit, self.fits = state["new"], state["fit"], state["fits"]


@dataclass
class _Stacked:
    """Every fitted key's mean, scale and basis in arrays (zero-padded to the widest), for
    :func:`_residuals`."""

    slot: dict[Hashable, int]
    mean: np.ndarray  # keys x widest d
    scale: np.ndarray
    basis: np.ndarray  # keys x widest d x most components
    k: np.ndarray  # components per key
    d: np.ndarray  # metrics per key
    typical: np.ndarray

    @classmethod
    def of(cls, keys: dict[Hashable, _Key]) -> _Stacked:
        fits = [(key, k.fit) for key, k in keys.items() if k.fit is not None]
        d = max((f.mean.size for _, f in fits), default=0)
        c = max((f.basis.shape[1] for _, f in fits), default=0)
        mean, scale = np.zeros((len(fits), d)), np.ones((len(fits), d))
        basis = np.zeros((len(fits), d, c))
        for s, (_, f) in enumerate(fits):
            n, m = f.basis.shape
            mean[s, :n], scale[s, :n], basis[s, :n, :m] = f.mean, f.scale, f.basis
        return cls(
            {key: s for s, (key, _) in enumerate(fits)}, mean, scale, basis,
            np.array([f.basis.shape[1] for _, f in fits], dtype=np.int64),
            np.array([f.mean.size for _, f in fits], dtype=np.int64),
            np.array([f.typical for _, f in fits], dtype=float),
        )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _residuals(rows, slots, mean, scale, basis, ks, ds, typical, out):  # fmt: skip
    """Per row with a fit (``slots`` >= 0): its z-scores against the fit (an absent metric,
    ``nan`` or beyond the row, reads the mean: 0), the energy of what the fit's components
    leave over, divided by the fit's typical energy; into ``out``."""
    width = rows.shape[1]
    z = np.empty(mean.shape[1])
    p = np.empty(basis.shape[2])
    for r in range(slots.shape[0]):
        s = slots[r]
        if s < 0:
            continue
        d, k = ds[s], ks[s]
        for i in range(d):
            x = rows[r, i] if i < width else np.nan
            z[i] = 0.0 if np.isnan(x) else (x - mean[s, i]) / scale[s, i]
        for j in range(k):
            acc = 0.0
            for i in range(d):
                acc += z[i] * basis[s, i, j]
            p[j] = acc
        energy = 0.0
        for i in range(d):
            back = 0.0
            for j in range(k):
                back += p[j] * basis[s, i, j]
            e = z[i] - back
            energy += e * e
        out[r] = energy / typical[s]


@dataclass
class LinkResidual:
    """PCA reconstruction error per key, relative to the key's typical error.

    Parameters
    ----------
    window
        Normal rows kept per key (the fit's window).
    refit_every
        A key is refitted once this many new rows arrived since its last fit.
    min_rows
        Rows a key needs before its first fit.
    variance
        Share of the standardised variance the components keep.
    min_scale
        Smallest spread of a metric, absolute in transformed units, so a metric that was
        constant over the window does not turn noise into a huge residual.
    """

    window: int = 2048
    refit_every: int = 256
    min_rows: int = 256
    variance: float = 0.95
    min_scale: float = 0.01
    keys_: dict[Hashable, _Key] = field(default_factory=dict)
    # every key's fit side by side for the compiled scoring (derived: rebuilt after a refit)
    _stacked: _Stacked | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stacked"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_stacked", None)  # (pickled before it existed)
        self.__dict__.update(state)

    def learn_many(self, keys: Sequence[Hashable], rows: np.ndarray) -> None:
        """Add normal rows (``nan`` = metric absent); nothing is refitted here."""
        rows = np.asarray(rows, dtype=float)
        if len(keys) != len(rows):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        groups: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        for key, idx in groups.items():  # each key's rows in their order, as one block
            k = self.keys_.get(key)
            if k is None:
                k = self.keys_[key] = _Key(_Window(self.window))
            k.rows.extend(rows[idx])
            k.new += len(idx)

    def refit(self) -> int:
        """Refit every key that is due; returns how many were refitted."""
        n = 0
        for k in self.keys_.values():
            due = k.fit is None and len(k.rows) >= self.min_rows
            if due or (k.fit is not None and k.new >= self.refit_every):
                k.fit = self._fit(k.rows)
                k.new = 0
                k.fits += 1
                n += 1
        if n:
            self._stacked = None
        return n

    def _fit(self, rows: _Window) -> _Fit | None:
        m, _sizes = rows.padded()  # the feature set may have grown meanwhile: nan-padded
        d = m.shape[1]
        absent = np.isnan(m)
        counts = len(m) - absent.sum(axis=0)
        present = counts > 0
        if present.sum() < 2:
            return None  # one metric has no structure to break
        np.copyto(m, 0.0, where=absent)  # (a copy of the window)
        mean = m.sum(axis=0) / np.maximum(counts, 1)  # (absent metrics: 0)
        np.copyto(m, mean, where=absent)
        scale = np.maximum(m.std(axis=0), self.min_scale)
        z = (m - mean) / scale
        # the principal axes from the d x d Gram matrix (eigh), not an SVD of the n x d
        # window: a tenth of the time at 8,192 rows, and the same axes up to rounding (only
        # the projection onto them is used, so their signs do not matter)
        gram = z.T @ z
        energy, axes = np.linalg.eigh(gram)  # ascending
        energy, axes = np.maximum(energy[::-1], 0.0), axes[:, ::-1]
        total = float(np.trace(gram))
        if total <= 0.0:
            k = 0
        else:
            k = int(np.searchsorted(np.cumsum(energy) / total, self.variance)) + 1
        k = min(k, int(present.sum()) - 1)
        basis = np.ascontiguousarray(axes[:, :k])
        # the window's residual energy is what the dropped axes hold
        typical = max(total - float(energy[:k].sum()), 0.0) / len(z)
        # a window that fits its components exactly still has a scale: one unit of spread
        # outside them per metric is 'typical' then
        return _Fit(mean, scale, basis, max(typical, 1e-3 * d))

    def score_many(self, keys: Sequence[Hashable], rows: np.ndarray) -> np.ndarray:
        """Residual energy of each row relative to its key's typical one (``nan``: no fit).

        Row by row in one compiled loop (:func:`_residuals`): a row's score depends on its
        key's fit alone, never on which rows share its batch."""
        rows = np.asarray(rows, dtype=float)
        out = np.full(len(keys), np.nan)
        stacked = self._stacked
        if stacked is None:
            stacked = self._stacked = _Stacked.of(self.keys_)
        if not stacked.slot:
            return out
        if len(rows) < len(keys):
            raise ValueError(f"{len(keys)} keys for {len(rows)} rows")
        get = stacked.slot.get
        slots = np.fromiter((get(key, -1) for key in keys), dtype=np.int64, count=len(keys))
        _residuals(
            np.ascontiguousarray(rows), slots, stacked.mean, stacked.scale, stacked.basis,
            stacked.k, stacked.d, stacked.typical, out,
        )  # fmt: skip
        return out

    @property
    def fits_(self) -> int:
        """Fits made so far, over all keys."""
        return sum(k.fits for k in self.keys_.values())
