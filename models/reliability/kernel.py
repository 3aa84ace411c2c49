"""The compiled per-record loop of :class:`~models.reliability.features.NodeContext`.

The context's features are sequential by nature: a record's z-scores read the baselines that
every earlier record of its link (and node, and for the queue coupling: of the fleet) has
moved. So the batch is walked record by record, in stream order, as the plain Python loop
did, but compiled with numba over arrays (per link, per node and per column), which costs
about a tenth of the interpreted loop. The arithmetic is the Python loop's, operation for
operation and in the same order, so the floats are the same bit for bit
(``tests/models/test_reliability_kernel.py`` checks it against the plain Python loop, kept as
the reference in ``tests/models/reference_features.py``).

State layout (every array is owned and grown by ``NodeContext``; ``F`` columns):

* columns ``kind``: :data:`LINK` and :data:`NODE` (table metrics, by scope), :data:`RATE`
  (a node metric's rate of change), :data:`RESTART`, :data:`GENERIC`, :data:`DELTA` and
  :data:`CUMULATIVE` (generic features; the last two are counters turned into rates);
* ``stats[L or N, F, 3]``: exponentially weighted (mean, variance, count) of a link's or a
  node's column (count 0: no baseline yet), and ``link_run[L]``: protected samples in a row;
* ``node_i[N, 1 + 2R]``: per node its protected ticks in a row, then each of the ``R`` rate
  metrics' ring head and ring length; ``node_f[N, 2]``: the last tick's event time and the
  last uptime (NaN: none);
* rings of the rate metrics' past values and of the trend levels (``lag`` samples each);
* ``coupling[F, 3]``: each link metric's (mean of z x q, mean of q x q, rows);
* ``counter[L, F, 2]``: each counter's (event time, value) of its last sample.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["features"]

#: Column kinds, in this order: the loop tests ranges of them.
LINK, NODE, RATE, RESTART, GENERIC, DELTA, CUMULATIVE = range(7)
#: The largest |z| a feature takes.
Z_CLIP = 50.0
#: A baseline is learned robustly (``clip_z``) only after this many samples: the first ones
#: set its scale.
CLIP_AFTER = 20
#: The coupling to the queue is learned from rows whose queue z-score is above this (below, a
#: queue of a few packets moves by counting noise, and nothing moves with it) ...
QUEUE_LEARN_ABOVE = 2.0
#: ... with this weight after a fast start (about the last 1,000 such rows of the fleet) ...
QUEUE_ALPHA = 0.001
#: ... and is used once a metric has this many of them.
QUEUE_MIN_ROWS = 20


@numba.njit(cache=True, nogil=True)
def _update(stats: np.ndarray, r: int, c: int, x: float, alpha: float, c2: float,
            c2floor2: float) -> None:  # fmt: skip
    """``_Stat.update``: learn ``x`` with weight ``alpha`` (winsorised with ``c2`` > 0)."""
    n = stats[r, c, 2] + 1.0
    stats[r, c, 2] = n
    a = max(alpha, 1.0 / n) if n < 1.0 / alpha else alpha
    mean = stats[r, c, 0]
    var = stats[r, c, 1]
    d = x - mean
    if c2 > 0.0 and n > CLIP_AFTER:
        lim = c2 * var + c2floor2
        if d * d > lim:
            d = math.copysign(math.sqrt(lim), d)
    stats[r, c, 0] = mean + a * d
    stats[r, c, 1] = (1.0 - a) * (var + a * d * d)


@numba.njit(cache=True, nogil=True)
def _z(stats: np.ndarray, r: int, c: int, x: float, floor2: float, min_count: int) -> float:
    """``_Stat.z``: 0 before ``min_count`` samples, else the clipped z-score."""
    if stats[r, c, 2] < min_count:
        return 0.0
    z = (x - stats[r, c, 0]) / math.sqrt(stats[r, c, 1] + floor2)
    return Z_CLIP if z > Z_CLIP else (-Z_CLIP if z < -Z_CLIP else z)


@numba.njit(cache=True, nogil=True)
def features(
    learn, link_of, node_of, has_node, ts, values, uptime, unreachable,  # the batch
    kind, offset, floor2, rises, queue_explains, coupled, queue_col, rate_src, rate_col,
    restart_col, params, trend_params,  # the columns and the parameters
    link_stats, link_run, node_stats, node_i, node_f, rate_ring, trend_i, trend_f, trend_ring,
    coupling, counter,  # the state
    z_out, x_out, value_out, mean_out, z_before, row_out,  # the outputs
):  # fmt: skip
    """Score (and with ``learn``, learn) a batch, in order; see the module docstring.

    ``params``: span alpha, min count, protect z, protect weight, protect max, clip z
    squared, queue margin (NaN: the fixed rule), restart seconds, rate lag, rate floor
    squared. ``trend_params``: fast alpha, lag, variance alpha, k, cap, floor, min count,
    protect z, protect weight, min level z. Outputs: NaN where a feature is absent;
    ``z_before`` holds the link metrics' z-scores before the queue explained them (rows with
    the queue up and a learned margin only), ``row_out[i]`` = (warm, new tick, trend, queue z).
    """
    alpha = params[0]
    min_count = int(params[1])
    protect_z, protect_w, protect_max = params[2], params[3], params[4]
    clip2, margin, restart_s = params[5], params[6], params[7]
    rate_lag = int(params[8])
    rate_floor2 = params[9]
    t_fast, t_lag, t_var_a, t_k = trend_params[0], int(trend_params[1]), trend_params[2], trend_params[3]
    t_cap, t_floor, t_min_n = trend_params[4], trend_params[5], trend_params[6]
    t_pz, t_pw, t_min_z = trend_params[7], trend_params[8], trend_params[9]
    n_cols = kind.shape[0]
    n_rates = rate_src.shape[0]
    for i in range(ts.shape[0]):
        lk = link_of[i]
        nd = node_of[i]
        t = ts[i]
        last = node_f[nd, 0]
        new_tick = math.isnan(last) or t != last
        cold = False
        # -- table metrics and generic features ----------------------------------------------
        for c in range(n_cols):
            k = kind[c]
            v = values[i, c]
            if math.isnan(v) or RATE <= k <= RESTART:
                continue
            if k <= NODE:  # a table metric: in log space when it has an offset
                off = offset[c]
                x = math.log((v if v > 0.0 else 0.0) + off) if off else v
                st = link_stats if k == LINK else node_stats
                r = lk if k == LINK else nd
            else:  # a generic feature, a counter as its per-second rate since the last sample
                if k >= DELTA:
                    prev_t = counter[lk, c, 0]
                    if math.isnan(t) or math.isnan(prev_t) or not t - prev_t > 0.0:
                        z_out[i, c] = 0.0  # no earlier sample yet: no rate, no evidence
                        continue
                    dt = t - prev_t
                    if k == DELTA:
                        v = max(v, 0.0) / dt
                    else:
                        inc = v - counter[lk, c, 1]
                        v = (inc if inc >= 0.0 else max(v, 0.0)) / dt
                x = math.asinh(v)
                st, r = link_stats, lk
            x_out[i, c] = x
            value_out[i, c] = v
            cnt = st[r, c, 2]
            if cnt == 0.0:  # no baseline yet
                z_out[i, c] = 0.0
                cold = True
                continue
            cold = cold or cnt < min_count
            z_out[i, c] = _z(st, r, c, x, floor2[c], min_count)
            mean_out[i, c] = st[r, c, 0]
        # -- what the queue explains ---------------------------------------------------------
        q = 0.0 if queue_col < 0 or math.isnan(z_out[i, queue_col]) else z_out[i, queue_col]
        queued = False
        if q > 1.0:
            if math.isnan(margin):
                for c in range(n_cols):
                    if queue_explains[c] and z_out[i, c] > 0.0:
                        z_out[i, c] = max(0.0, z_out[i, c] - q)
            else:
                queued = True
                for c in range(n_cols):
                    v = z_out[i, c]
                    if not coupled[c] or math.isnan(v):
                        continue
                    z_before[i, c] = v
                    if coupling[c, 2] < QUEUE_MIN_ROWS:
                        e = q if queue_explains[c] else 0.0  # the fixed rule until learned
                    else:
                        slope = coupling[c, 0] / coupling[c, 1] if coupling[c, 1] > 0.0 else 0.0
                        e = margin * slope * q
                    if v > 0.0 and e > 0.0:
                        z_out[i, c] = max(0.0, v - e)
                    elif v < 0.0 and e < 0.0:
                        z_out[i, c] = min(0.0, v - e)
            z_out[i, queue_col] = min(q, 3.0)
        for c in range(n_cols):
            if rises[c] and z_out[i, c] < 0.0:
                z_out[i, c] = 0.0
        # -- rates of change -------------------------------------------------------------------
        for j in range(n_rates):
            s = rate_src[j]
            rc = rate_col[j]
            if s < 0 or math.isnan(x_out[i, s]) or node_i[nd, 1 + n_rates + j] != rate_lag:
                continue
            oldest = rate_ring[nd, j, node_i[nd, 1 + j]]
            rate = x_out[i, s] - oldest
            x_out[i, rc] = rate
            value_out[i, rc] = rate
            if node_stats[nd, rc, 2] > 0.0:
                zr = _z(node_stats, nd, rc, rate, rate_floor2, min_count)
                z_out[i, rc] = 0.0 if zr < 0.0 and rises[s] else zr
                mean_out[i, rc] = node_stats[nd, rc, 0]
            else:
                z_out[i, rc] = 0.0
        # -- restarts ----------------------------------------------------------------------------
        up = uptime[i]
        prev_up = node_f[nd, 1]
        if not math.isnan(up):
            young = max(0.0, 1.0 - up / restart_s)
            reset = not math.isnan(prev_up) and up + 1.0 < prev_up
            z_out[i, restart_col] = (
                10.0 * max(young, 1.0 if reset else 0.0) if not math.isnan(prev_up) else 0.0
            )
            x_out[i, restart_col] = up
        # -- the node's trend score (TrendTracker.score_one) -------------------------------------
        trend = 0.0
        if has_node[i]:  # over the metrics whose level is raised (none raised: 0)
            for j in range(n_rates):
                s = rate_src[j]
                if trend_i[nd, j, 2] == 0:  # no state for this metric yet
                    continue
                zs = 0.0 if s < 0 or math.isnan(z_out[i, s]) else z_out[i, s]
                if zs < t_min_z:
                    continue
                cs = trend_f[nd, j, 2]
                x = x_out[i, s] if s >= 0 else math.nan
                if new_tick and not math.isnan(x):
                    tz = _trend_step(trend_i, trend_f, trend_ring, nd, j, x, t_fast, t_lag,
                                     t_floor, t_min_n)[2]  # fmt: skip
                    cs = min(t_cap, max(0.0, cs + tz - t_k))
                trend = max(trend, cs)
        row_out[i, 0] = 0.0 if cold else 1.0
        row_out[i, 1] = 1.0 if new_tick else 0.0
        row_out[i, 2] = trend
        row_out[i, 3] = q
        if not learn:
            continue
        # -- learning (NodeContext.learn_row) ----------------------------------------------------
        link_dev = 0.0
        node_dev = 0.0
        for c in range(n_cols):
            k = kind[c]
            a = z_out[i, c]
            if math.isnan(a) or RATE <= k <= RESTART:
                continue
            a = -a if a < 0.0 else a
            if k == NODE:
                if a > node_dev:
                    node_dev = a
            elif a > link_dev:
                link_dev = a
        w_link = 1.0
        w_node = 1.0
        if link_dev > protect_z:
            link_run[lk] += 1
            w_link = protect_w if link_run[lk] <= protect_max else 1.0
        else:
            link_run[lk] = 0
        if new_tick:
            if node_dev > protect_z:
                node_i[nd, 0] += 1
            else:
                node_i[nd, 0] = 0
        if 0 < node_i[nd, 0] <= protect_max:
            w_node = protect_w
        if unreachable[i]:
            w_link = 0.0  # a link to a dead peer says nothing about this link's normal
        a_link = alpha * w_link
        a_node = alpha * w_node
        c2l = clip2 if w_link < 1.0 else 0.0
        c2n = clip2 if w_node < 1.0 else 0.0
        for c in range(n_cols):
            k = kind[c]
            x = x_out[i, c]
            if math.isnan(x) or RATE <= k <= RESTART:
                continue
            if k == NODE:
                if new_tick:
                    _update(node_stats, nd, c, x, a_node, c2n, c2n * floor2[c])
            elif w_link != 0.0:
                _update(link_stats, lk, c, x, a_link, c2l, c2l * floor2[c])
        if queued and q > QUEUE_LEARN_ABOVE and w_link > 0.0 and not cold:
            for c in range(n_cols):
                v = z_before[i, c]
                if math.isnan(v):
                    continue
                n = coupling[c, 2] + 1.0
                coupling[c, 2] = n
                a = max(QUEUE_ALPHA, 1.0 / n)
                coupling[c, 0] += a * (v * q - coupling[c, 0])
                coupling[c, 1] += a * (q * q - coupling[c, 1])
        if not math.isnan(t):
            for c in range(n_cols):
                k = kind[c]
                if k >= DELTA and not math.isnan(values[i, c]):
                    before = counter[lk, c, 0]
                    if math.isnan(before) or t > before:
                        counter[lk, c, 0] = t
                        counter[lk, c, 1] = values[i, c]
        if new_tick:
            _trend_learn(trend_i, trend_f, trend_ring, nd, rate_src, x_out[i], t_fast, t_lag,
                         t_var_a, t_k, t_cap, t_floor, t_min_n, t_pz, t_pw)  # fmt: skip
            for j in range(n_rates):
                s = rate_src[j]
                if s < 0 or math.isnan(x_out[i, s]):
                    continue
                rc = rate_col[j]
                if not math.isnan(x_out[i, rc]):
                    _update(node_stats, nd, rc, x_out[i, rc], a_node, c2n, c2n * rate_floor2)
                _ring_append(rate_ring[nd, j], node_i[nd], 1 + j, 1 + n_rates + j, x_out[i, s], rate_lag)
            node_f[nd, 0] = t
        if not math.isnan(x_out[i, restart_col]):
            node_f[nd, 1] = x_out[i, restart_col]


@numba.njit(cache=True, nogil=True)
def _ring_append(ring, heads, head_col, len_col, x, lag):  # fmt: skip
    """Append ``x`` to ``ring`` (a deque of ``lag`` values): ``heads[head_col]`` is the
    oldest's slot, ``heads[len_col]`` the length."""
    n = heads[len_col]
    h = heads[head_col]
    if n < lag:
        ring[(h + n) % lag] = x
        heads[len_col] = n + 1
    else:
        ring[h] = x
        heads[head_col] = (h + 1) % lag


@numba.njit(cache=True, nogil=True)
def _trend_step(trend_i, trend_f, trend_ring, nd, j, x, fast, lag, floor, min_n):  # fmt: skip
    """``TrendTracker._step``: (level, slope, slope z) of a new sample (nothing mutated)."""
    level0 = trend_f[nd, j, 0]
    level = x if math.isnan(level0) else level0 + fast * (x - level0)
    if trend_i[nd, j, 1] < lag:
        return level, 0.0, 0.0
    slope = level - trend_ring[nd, j, trend_i[nd, j, 0]]
    if trend_f[nd, j, 3] < min_n:
        return level, slope, 0.0
    return level, slope, slope / math.sqrt(trend_f[nd, j, 1] + floor * floor)


@numba.njit(cache=True, nogil=True)
def _trend_learn(trend_i, trend_f, trend_ring, nd, rate_src, x_row, fast, lag, var_a, k, cap,
                 floor, min_n, pz, pw):  # fmt: skip
    """``TrendTracker.learn_one`` of one node's sample: ``trend_i[nd, j]`` = (ring head,
    ring length, state exists), ``trend_f[nd, j]`` = (level, slope variance, cusum, count)."""
    for j in range(rate_src.shape[0]):
        s = rate_src[j]
        if s < 0 or math.isnan(x_row[s]):
            continue
        x = x_row[s]
        trend_i[nd, j, 2] = 1
        level, slope, z = _trend_step(trend_i, trend_f, trend_ring, nd, j, x, fast, lag, floor,
                                      min_n)  # fmt: skip
        trend_f[nd, j, 2] = min(cap, max(0.0, trend_f[nd, j, 2] + z - k))
        if trend_i[nd, j, 1] == lag:
            n = trend_f[nd, j, 3] + 1.0
            trend_f[nd, j, 3] = n
            w = pw if z > pz else 1.0
            aw = max(var_a, 1.0 / n) * w if n < 1.0 / var_a else var_a * w
            trend_f[nd, j, 1] = (1.0 - aw) * (trend_f[nd, j, 1] + aw * slope * slope)
        _ring_append(trend_ring[nd, j], trend_i[nd, j], 0, 1, level, lag)
        trend_f[nd, j, 0] = level
