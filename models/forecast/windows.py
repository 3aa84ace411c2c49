"""Per-link history as ring buffers, step features, and sliding windows for the LSTMs.

Each link (``node_id``, ``peer_id``) gets one row of a ``(links, capacity, features)`` ring
buffer. Records are appended in arrival order; a record whose event time is not after the
link's latest one is a duplicate of at-least-once delivery (or a replay) and is skipped.
Windows are gathered for many ``(row, step)`` pairs in one fancy-indexing call.

Step features (:data:`FEATURES`) are the legacy model's inputs: log throughput, log RTT, log
jitter, log packet loss, time of day and day of week (as sine/cosine). The level features are
made window-relative by :func:`normalize_windows` (each window minus its own mean), so one model
serves links whose capacities differ by four orders of magnitude.

Examples
--------
>>> import numpy as np
>>> h = LinkHistory(n_features=2, capacity=8)
>>> rows, steps, ok = h.append(["a", "b", "a", "a"], np.array([1.0, 1.0, 2.0, 2.0]),
...                            np.arange(8.0).reshape(4, 2), np.array([10.0, 20.0, 11.0, 11.0]))
>>> rows.tolist(), steps.tolist(), ok.tolist()      # the second "a" at t=2 is a duplicate
([0, 1, 0], [0, 0, 1], [True, True, True, False])
>>> h.windows(np.array([0]), np.array([1]), width=2)[0].tolist()
[[0.0, 1.0], [4.0, 5.0]]
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

#: Step features, in column order.
FEATURES = (
    "log_throughput",
    "log_rtt",
    "log_jitter",
    "log_loss",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)
#: Columns made window-relative (minus the window mean) by :func:`normalize_windows`.
LEVEL_COLUMNS = 3
#: Calendar columns: already in [-1, 1]; never standardised (over a short training span their
#: spread is tiny, and dividing by it would blow up every later time of day).
CALENDAR_COLUMNS = (4, 5, 6, 7)
_DAY, _WEEK = 86400.0, 7 * 86400.0
_EPOCH_THURSDAY = 3 * 86400.0  # 1970-01-01 was a Thursday: shift so 0 = Monday 00:00


def step_features(
    ts: np.ndarray, tput: np.ndarray, rtt: np.ndarray, jitter: np.ndarray, loss: np.ndarray
) -> np.ndarray:
    """Feature rows ``(n, len(FEATURES))`` from per-record arrays (``ts`` in epoch seconds).

    Missing values (NaN) of rtt/jitter/loss become 0 after the log transform.

    >>> f = step_features(np.array([0.0]), np.array([99.0]), np.array([9.0]),
    ...                   np.array([0.0]), np.array([0.0]))
    >>> [round(float(v), 3) for v in f[0, :4]]
    [4.605, 2.303, 0.0, 0.0]
    """
    out = np.empty((len(ts), len(FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(np.maximum(tput, 0.0))
    out[:, 1] = np.log1p(np.nan_to_num(np.maximum(rtt, 0.0)))
    out[:, 2] = np.log1p(np.nan_to_num(np.maximum(jitter, 0.0)))
    out[:, 3] = np.log1p(np.nan_to_num(np.maximum(loss, 0.0)) * 1e4)
    day = 2 * math.pi * np.mod(ts, _DAY) / _DAY
    week = 2 * math.pi * np.mod(ts + _EPOCH_THURSDAY, _WEEK) / _WEEK
    out[:, 4], out[:, 5] = np.sin(day), np.cos(day)
    out[:, 6], out[:, 7] = np.sin(week), np.cos(week)
    return out


def row_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis, one term after the other, so a row's sum never depends on the
    other rows in the array (numpy's reductions may group the terms differently with the
    array's shape, which changes the last bit: then a batch of 37 and one of 500 would
    forecast differently).

    >>> row_sum(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).tolist()
    [6.0, 15.0]
    """
    out = np.array(a[..., 0], dtype=np.float64)
    for i in range(1, a.shape[-1]):
        out += a[..., i]
    return out


def normalize_windows(
    raw: np.ndarray, level_columns: int = LEVEL_COLUMNS, ref_alpha: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Make the level columns window-relative; return ``(windows, ref)``.

    ``ref`` is each window's reference level of column 0 (log throughput): its mean, or with
    ``ref_alpha`` its exponentially weighted mean (the EWMA baseline's level, in log scale).
    Forecasts are made relative to it and turned back with ``expm1(ref + forecast)``, so a
    network that outputs 0 is the EWMA baseline and learns corrections to it.

    >>> x, ref = normalize_windows(np.array([[[1.0, 5.0], [3.0, 7.0]]]), level_columns=1)
    >>> x.tolist(), ref.tolist()
    ([[[-1.0, 5.0], [1.0, 7.0]]], [2.0])
    >>> normalize_windows(np.array([[[1.0], [3.0]]]), 1, ref_alpha=0.5)[1].tolist()
    [2.0]
    """
    x = raw.astype(np.float32, copy=True)
    mean = x[:, :, :level_columns].mean(axis=1, keepdims=True)
    if ref_alpha is None:
        ref = mean[:, 0, 0].astype(np.float64)
    else:
        w = ref_alpha * (1.0 - ref_alpha) ** np.arange(raw.shape[1] - 1, -1, -1, dtype=np.float64)
        w[0] += (1.0 - ref_alpha) ** raw.shape[1]  # the EWMA's start value is the first step
        # not a matrix-vector product: each row's value must not depend on the batch
        ref = row_sum(raw[:, :, 0].astype(np.float64) * w)
    x[:, :, :level_columns] -= mean
    return x, ref


def step_pieces(n: int, seen: int, step: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` slices of a batch of ``n`` items that end at every step
    boundary (a multiple of ``step`` items counted over all batches; ``seen`` came before).

    >>> step_pieces(10, seen=7, step=4)       # boundaries after items 8, 12 and 16 overall
    [(0, 1), (1, 5), (5, 9), (9, 10)]
    """
    cuts = list(range(step - seen % step, n, step))
    return list(zip([0, *cuts], [*cuts, n], strict=True))


def key_chunks(keys: Sequence[Hashable], limit: int) -> list[tuple[int, int]]:
    """Split a batch into consecutive ``(start, stop)`` slices with at most ``limit`` records
    of any one key each (arrival order is kept).

    A ring buffer of ``capacity`` steps holds a batch's windows only while no key brings more
    than ``capacity - width - horizon`` records to it: more, and the key's own later records
    overwrite the steps its earlier windows are gathered from. A Kafka batch can hold
    thousands of records of one partition's few keys, so callers cut batches with this.

    >>> key_chunks(["a", "b", "a", "a", "b", "a"], limit=2)
    [(0, 3), (3, 6)]
    >>> key_chunks(["a", "b"], limit=5)
    [(0, 2)]
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if len(keys) <= limit:
        return [(0, len(keys))] if len(keys) else []
    out: list[tuple[int, int]] = []
    seen: dict[Hashable, int] = {}
    start = 0
    for i, k in enumerate(keys):
        n = seen.get(k, 0)
        if n >= limit:
            out.append((start, i))
            start, seen, n = i, {}, 0
        seen[k] = n + 1
    out.append((start, len(keys)))
    return out


class LinkHistory:
    """Ring buffers of step features, raw target values and event times, one row per key.

    Parameters
    ----------
    n_features
        Feature columns per step.
    capacity
        Steps kept per key. One :meth:`append` of more than ``capacity - width - horizon``
        records of a key overwrites steps the windows of its earlier records need: cut such
        batches with :func:`key_chunks` first.
    """

    def __init__(self, n_features: int, capacity: int = 512) -> None:
        self.n_features, self.capacity = n_features, capacity
        self.index: dict[Hashable, int] = {}
        self.keys: list[Hashable] = []
        self.feats = np.zeros((0, capacity, n_features), dtype=np.float32)
        self.value = np.zeros((0, capacity))
        self.ts = np.zeros((0, capacity))
        self.count = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def _row(self, key: Hashable) -> int:
        row = self.index.get(key)
        if row is None:
            row = self.index[key] = len(self.keys)
            self.keys.append(key)
            if row >= len(self.count):
                grow = max(16, len(self.count))
                self.feats = np.concatenate(
                    [self.feats, np.zeros((grow, self.capacity, self.n_features), np.float32)]
                )
                self.value = np.concatenate([self.value, np.zeros((grow, self.capacity))])
                self.ts = np.concatenate([self.ts, np.full((grow, self.capacity), -np.inf)])
                self.count = np.concatenate([self.count, np.zeros(grow, dtype=np.int64)])
        return row

    def rows_for(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Row of each key (new keys get a row)."""
        return np.array([self._row(k) for k in keys], dtype=np.int64)

    def append(
        self, keys: Sequence[Hashable], ts: np.ndarray, feats: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append records in order; return ``(rows, steps, accepted_mask)`` of the accepted ones.

        ``steps`` counts each key's accepted records from 0.
        """
        rows = np.empty(len(keys), dtype=np.int64)
        ok = np.zeros(len(keys), dtype=bool)
        last: dict[int, float] = {}
        cap = self.capacity
        for i, key in enumerate(keys):
            r = self._row(key)
            t = float(ts[i])
            prev = last.get(r)
            if prev is None:
                c = self.count[r]
                prev = self.ts[r, (c - 1) % cap] if c else -np.inf
            if t > prev:
                rows[i], ok[i], last[r] = r, True, t
        rows = rows[ok]
        # step of each accepted record: the key's count so far plus its rank within the batch
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        first = np.searchsorted(sorted_rows, sorted_rows, side="left")
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows)) - first
        steps = self.count[rows] + rank
        pos = steps % cap
        self.feats[rows, pos] = feats[ok]
        self.value[rows, pos] = values[ok]
        self.ts[rows, pos] = ts[ok]
        np.add.at(self.count, rows, 1)
        return rows, steps, ok

    def peek(
        self, keys: Sequence[Hashable], ts: np.ndarray, feats: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The windows that :meth:`append` of these records, then :meth:`windows`, would give,
        without changing the buffers: ``(accepted_mask, index, windows)``, where ``index`` are
        the input positions of the accepted records whose window is full (step >= ``width - 1``)
        and ``windows`` ``(len(index), width, F)`` theirs, in input order.

        The windows come from the buffers' last ``width - 1`` steps and the records themselves,
        so no key's count in one call is limited by the capacity. A forecaster infers them in
        one large batch ahead of the appends (per-row cost falls with the batch).

        >>> h = LinkHistory(n_features=1, capacity=8)
        >>> _ = h.append(["a"], np.array([1.0]), np.array([[1.0]]), np.array([0.0]))
        >>> ok, index, win = h.peek(["a", "a", "b", "a"], np.array([2.0, 2.0, 1.0, 3.0]),
        ...                         np.array([[2.0], [9.0], [5.0], [3.0]]), width=2)
        >>> ok.tolist(), index.tolist(), win[..., 0].tolist(), h.count.tolist()[:1]
        ([True, False, True, True], [0, 3], [[1.0, 2.0], [2.0, 3.0]], [1])
        """
        n, cap = len(keys), self.capacity
        local: dict[Hashable, int] = {}
        rows: list[int] = []  # buffer row of each local key (-1: a key not seen yet)
        counts: list[int] = []
        last: list[float] = []  # latest accepted event time of each local key
        ids = np.empty(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        for i, key in enumerate(keys):  # the same acceptance as append()
            j = local.get(key)
            if j is None:
                j = local[key] = len(rows)
                r = self.index.get(key, -1)
                c = int(self.count[r]) if r >= 0 else 0
                rows.append(r)
                counts.append(c)
                last.append(float(self.ts[r, (c - 1) % cap]) if c else -np.inf)
            t = float(ts[i])
            ids[i] = j
            if t > last[j]:
                ok[i], last[j] = True, t
        ids = ids[ok]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(len(ids)) - np.searchsorted(sorted_ids, sorted_ids, side="left")
        base = np.array(counts, dtype=np.int64)
        full = base[ids] + rank >= width - 1
        # per local key: its last width - 1 buffered steps, then this call's accepted records
        most = int(rank.max()) + 1 if len(rank) else 0
        tmp = np.zeros((len(rows), width - 1 + most, self.n_features), dtype=self.feats.dtype)
        known = np.array(rows, dtype=np.int64) >= 0
        if known.any() and width > 1:
            at = np.array(rows, dtype=np.int64)[known]
            st = base[known][:, None] + np.arange(1 - width, 0)
            tmp[known, : width - 1] = np.where(
                (st >= 0)[..., None], self.feats[at[:, None], st % cap], 0.0
            )
        tmp[ids, width - 1 + rank] = feats[ok]
        sel = np.flatnonzero(full)
        win = tmp[ids[sel][:, None], rank[sel][:, None] + np.arange(width)]
        return ok, np.flatnonzero(ok)[sel], win

    def windows(self, rows: np.ndarray, steps: np.ndarray, width: int) -> np.ndarray:
        """Raw feature windows ``(n, width, F)`` ending at (and including) each step."""
        pos = (steps[:, None] + np.arange(1 - width, 1)) % self.capacity
        return self.feats[rows[:, None], pos]

    def values_at(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Raw target values at ``(row, step)``."""
        return self.value[rows, steps % self.capacity]

    def times_at(self, rows: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Event times (epoch s) at ``(row, step)``."""
        return self.ts[rows, steps % self.capacity]

    def recent_pairs(self, first_offset: int, last_offset: int) -> tuple[np.ndarray, np.ndarray]:
        """All ``(row, step)`` with ``count - last_offset > step >= count - capacity + first_offset``
        and ``step >= first_offset``: steps still in the buffer with room around them."""
        n = len(self.keys)
        rows, steps = [], []
        for r in range(n):
            c = int(self.count[r])
            lo = max(first_offset, c - self.capacity + first_offset)
            hi = c - last_offset
            if hi > lo:
                rows.append(np.full(hi - lo, r))
                steps.append(np.arange(lo, hi))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(steps)
