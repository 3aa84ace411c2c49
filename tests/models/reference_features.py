"""The per-node context features as the plain Python loop computed them, record by record
(``models/reliability/features.py`` up to the compiled loop, kept here unchanged): the
reference that :mod:`models.reliability.kernel` must match bit for bit
(``tests/models/test_reliability_kernel.py``), and the maker of checkpoints of the dict-based
state that came before it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from models.reliability.features import (
    COVERED_BY,
    GENERIC_FLOOR2,
    METRICS,
    QUEUE_EXPLAINS,
    RATE_FLOOR,
    RATE_FLOOR2,
    RATE_METRICS,
    RISES_ONLY,
    FeatureRow,
    MetricSpec,
    field_getter,
)
from models.reliability.generic import (
    GENERIC_FLOOR,
    counter_rate,
    epoch,
    generic_fields,
    generic_values,
)
from models.reliability.kernel import (
    CLIP_AFTER,
    QUEUE_ALPHA,
    QUEUE_LEARN_ABOVE,
    QUEUE_MIN_ROWS,
    Z_CLIP,
)
from models.reliability.trend import TrendTracker

asinh, isfinite, log, sqrt = math.asinh, math.isfinite, math.log, math.sqrt

__all__ = ["NodeContext"]


class _Stat:
    """Exponentially weighted mean/variance with a fast start (``__slots__`` for memory)."""

    __slots__ = ("mean", "var", "n")

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def z(self, x: float, floor: float, min_count: int) -> float:
        if self.n < min_count:
            return 0.0
        z = (x - self.mean) / math.sqrt(self.var + floor * floor)
        return Z_CLIP if z > Z_CLIP else (-Z_CLIP if z < -Z_CLIP else z)

    def update(self, x: float, alpha: float, c2: float = 0.0, c2floor2: float = 0.0) -> None:
        """Learn ``x`` with weight ``alpha``; with ``c2 > 0`` (a clip ``c`` squared, and
        ``c2floor2`` = ``c2`` x the floor squared) a deviation beyond ``c`` standard deviations
        is learned as one of ``c`` (winsorised, Huber's rule), once the baseline has
        :data:`CLIP_AFTER` samples."""
        n = self.n = self.n + 1
        a = max(alpha, 1.0 / n) if n < 1.0 / alpha else alpha
        d = x - self.mean
        if c2 > 0.0 and n > CLIP_AFTER:
            lim = c2 * self.var + c2floor2
            if d * d > lim:
                d = math.copysign(math.sqrt(lim), d)
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)


class _Coupling:
    """Least-squares slope, through the origin, of one link metric's z-score on the queue's,
    exponentially weighted (a fast start, then ``alpha``)."""

    __slots__ = ("zq", "qq", "n")

    def __init__(self) -> None:
        self.zq = 0.0  # mean of z * q
        self.qq = 0.0  # mean of q * q
        self.n = 0

    @property
    def slope(self) -> float:
        return self.zq / self.qq if self.qq > 0.0 else 0.0

    def update(self, z: float, q: float, alpha: float) -> None:
        self.n += 1
        a = max(alpha, 1.0 / self.n)
        self.zq += a * (z * q - self.zq)
        self.qq += a * (q * q - self.qq)


class _Node:
    __slots__ = ("stats", "last_time", "past", "rates", "prev_uptime", "protected")

    def __init__(self) -> None:
        self.stats: dict[str, _Stat] = {}
        self.last_time: Any = None
        self.past: dict[str, deque[float]] = {}  # metric -> its last ``rate_lag`` tick values
        self.rates: dict[str, _Stat] = {}
        self.prev_uptime: float | None = None
        self.protected = 0  # consecutive protected ticks


class NodeContext:
    """Per-node and per-link baselines turned into z-score features, one record at a time
    (the parameters are :class:`models.reliability.features.NodeContext`'s).
    """

    def __init__(
        self,
        span: int = 360,
        min_count: int = 20,
        protect_z: float = 6.0,
        protect_weight: float = 0.1,
        protect_max: int = 120,
        rate_lag: int = 36,
        restart_s: float = 300.0,
        trend_lag: int = 24,
        trend_k: float = 1.0,
        trend_min_z: float = 0.0,
        queue_explain: float | None = 3.0,
        rises_only: tuple[str, ...] = RISES_ONLY,
        metrics: tuple[MetricSpec, ...] = METRICS,
        generic: bool = True,
        clip_z: float | None = None,
    ) -> None:
        self.span = span
        self.min_count = min_count
        self.protect_z = protect_z
        self.protect_weight = protect_weight
        self.protect_max = protect_max
        self.rate_lag = rate_lag
        self.restart_s = restart_s
        self.trend_lag = trend_lag
        self.trend_k = trend_k
        self.trend_min_z = trend_min_z
        if queue_explain is not None and not queue_explain >= 0.0:
            raise ValueError(f"queue_explain must be >= 0 or None, got {queue_explain}")
        self.queue_explain = queue_explain
        unknown = [n for n in rises_only if n not in {m.name for m in metrics}]
        if unknown:
            raise ValueError(f"rises_only names metrics outside the table: {unknown}")
        self.rises_only = tuple(rises_only)
        if clip_z is not None and not clip_z > 0.0:
            raise ValueError(f"clip_z must be > 0 or None, got {clip_z}")
        self.clip_z = clip_z
        self.metrics = metrics
        self.generic = generic
        self.generic_fields_ = (
            generic_fields(tuple(m.name for m in metrics), COVERED_BY) if generic else ()
        )
        self.trend_ = TrendTracker(RATE_METRICS, lag=trend_lag, k=trend_k)
        self.nodes_: dict[str, _Node] = {}
        self.links_: dict[tuple[str, str | None], dict[str, _Stat]] = {}
        # (node_id, peer_id) -> counter feature -> (event time, value) of its last sample
        self.counters_: dict[tuple[str, str | None], dict[str, tuple[float, float]]] = {}
        self.couplings_: dict[str, _Coupling] = {}  # link metric -> its coupling to the queue
        self._plan()

    def _plan(self) -> None:
        """Per table metric ``(name, link scope, log offset, floor squared)`` and the offsets
        by name: the hot loops read tuples instead of :class:`MetricSpec` attributes."""
        self.plan_ = tuple((m.name, m.scope == "link", m.offset, m.floor * m.floor)
                           for m in self.metrics)  # fmt: skip
        self.clip2_ = self.clip_z * self.clip_z if self.clip_z else 0.0
        self.offsets_ = {m.name: m.offset for m in self.metrics}
        self.offsets_.update({f"{n}_rate": 0.0 for n in RATE_METRICS})  # a rate: as it is
        self.coupled_ = tuple(
            m.name for m in self.metrics if m.scope == "link" and m.name != "queue_depth"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("plan_", None)  # derived from ``metrics``: rebuilt on restore
        state.pop("offsets_", None)
        state.pop("coupled_", None)
        state.pop("clip2_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a checkpoint from before generic features restores as it was: the table alone
        state.setdefault("generic", False)
        state.setdefault("generic_fields_", ())
        state.setdefault("counters_", {})
        # one from before the learned coupling keeps the fixed rule
        state.setdefault("queue_explain", None)
        state.setdefault("couplings_", {})
        state.setdefault("rises_only", ())  # and one from before one-sided metrics: two-sided
        state.setdefault("clip_z", None)  # and one from before robust baselines: plain EWMA
        self.__dict__.update(state)
        self._plan()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Every feature a row can carry, in a fixed order (the forest's columns)."""
        return (
            tuple(m.name for m in self.metrics)
            + tuple(f"{n}_rate" for n in RATE_METRICS)
            + ("restart",)
        )

    # -- scoring ------------------------------------------------------------------------------
    def score_one(self, rec: Any) -> FeatureRow:
        """Features of ``rec`` against the baselines so far (the record is not learned)."""
        get = field_getter(rec)
        node_id, peer_id, ts = get("node_id"), get("peer_id"), get("timestamp")
        node = self.nodes_.get(node_id) or _Node()
        link = self.links_.get((node_id, peer_id)) or {}
        nstats = node.stats
        new_tick = node.last_time is None or ts != node.last_time
        z: dict[str, float] = {}
        xs: dict[str, float] = {}
        values: dict[str, float] = {}
        means: dict[str, float] = {}
        mc = self.min_count
        cold = False
        plan, offsets = self.plan_, self.offsets_
        # the arithmetic is _Stat.z's and MetricSpec.transform's, inlined (the same floats)
        for name, on_link, offset, floor2 in plan:
            v = get(name)
            if v is None:
                continue
            v = float(v)
            if not isfinite(v):
                continue
            x = log((v if v > 0.0 else 0.0) + offset) if offset else v
            xs[name] = x
            values[name] = v
            st = (link if on_link else nstats).get(name)
            if st is None:
                z[name] = 0.0
                cold = True
                continue
            mean = st.mean
            means[name] = mean
            if st.n < mc:
                cold = True
                z[name] = 0.0
                continue
            zz = (x - mean) / sqrt(st.var + floor2)
            z[name] = Z_CLIP if zz > Z_CLIP else (-Z_CLIP if zz < -Z_CLIP else zz)
        generic: list[str] = []
        counts: dict[str, tuple[float, float]] = {}
        if self.generic:
            prev = self.counters_.get((node_id, peer_id)) or {}
            t: float | None = None  # event time in epoch seconds, read once a counter needs it
            t_read = False
            for name, v, counter in generic_values(get, self.generic_fields_):
                if not isfinite(v):
                    continue
                generic.append(name)
                if counter:
                    if not t_read:
                        t, t_read = epoch(ts), True
                    if t is not None:
                        counts[name] = (t, v)
                    r = counter_rate(prev.get(name), t, v, counter) if t is not None else None
                    if r is None:  # no earlier sample yet: no rate, not evidence either way
                        z[name] = 0.0
                        continue
                    v = r
                x = asinh(v)  # generic.transform
                xs[name] = x
                values[name] = v
                st = link.get(name)
                if st is None:
                    z[name] = 0.0
                    cold = True
                    continue
                cold = cold or st.n < mc
                z[name] = st.z(x, GENERIC_FLOOR, mc)
                means[name] = st.mean
        q = z.get("queue_depth", 0.0)
        queue: tuple[float, dict[str, float]] | None = None
        if q > 1.0:
            margin = self.queue_explain
            if margin is None:
                for name in QUEUE_EXPLAINS:
                    v = z.get(name)
                    if v is not None and v > 0.0:
                        z[name] = max(0.0, v - q)
            else:
                queue = (q, {name: z[name] for name in self.coupled_ if name in z})
                couplings = self.couplings_
                for name, v in queue[1].items():
                    c = couplings.get(name)
                    if c is None or c.n < QUEUE_MIN_ROWS:
                        e = q if name in QUEUE_EXPLAINS else 0.0  # the fixed rule until learned
                    else:
                        e = margin * c.slope * q
                    if v > 0.0 and e > 0.0:
                        z[name] = max(0.0, v - e)
                    elif v < 0.0 and e < 0.0:
                        z[name] = min(0.0, v - e)
            z["queue_depth"] = min(q, 3.0)
        for name in self.rises_only:
            v = z.get(name)
            if v is not None and v < 0.0:
                z[name] = 0.0
        for name in RATE_METRICS:
            past = node.past.get(name)
            if name in xs and past and len(past) == self.rate_lag:
                rate = xs[name] - past[0]
                rate_name = name + "_rate"
                xs[rate_name] = values[rate_name] = rate  # (an alert can name it: values)
                st = node.rates.get(name)
                zr = st.z(rate, RATE_FLOOR, mc) if st is not None else 0.0
                z[rate_name] = 0.0 if zr < 0.0 and name in self.rises_only else zr
                if st is not None:
                    means[rate_name] = st.mean
        uptime = get("uptime_s")
        if uptime is not None:
            young = max(0.0, 1.0 - float(uptime) / self.restart_s)
            reset = node.prev_uptime is not None and float(uptime) + 1.0 < node.prev_uptime
            z["restart"] = (
                10.0 * max(young, 1.0 if reset else 0.0) if node.prev_uptime is not None else 0.0
            )
            xs["restart"] = float(uptime)
        streams = get("amst_streams")
        trend = 0.0
        if node_id is not None:
            raised = [n for n in RATE_METRICS if z.get(n, 0.0) >= self.trend_min_z]
            trend = self.trend_.score_one(node_id, xs, new_tick, raised) if raised else 0.0
        return FeatureRow(
            node_id=node_id,
            peer_id=peer_id,
            event_time=ts,
            new_tick=new_tick,
            z=z,
            values=values,
            peer_unreachable=streams is not None and streams == 0 and peer_id is not None,
            trend=trend,
            warm=not cold,
            generic=generic,
            _x=xs,
            _counts=counts,
            _means=means,
            _offsets=offsets,
            _queue=queue,
        )

    # -- learning -----------------------------------------------------------------------------
    def learn_row(self, row: FeatureRow) -> None:
        """Update the baselines with a row from :meth:`score_one` (protected if it deviates)."""
        node = self.nodes_.get(row.node_id)
        if node is None:
            node = self.nodes_[row.node_id] = _Node()
        key = (row.node_id, row.peer_id)
        link = self.links_.get(key)
        if link is None:
            link = self.links_[key] = {"": _Stat()}  # "": consecutive protected samples in .n
        alpha = 2.0 / (self.span + 1.0)
        z, xs = row.z, row._x
        plan = self.plan_
        link_dev = node_dev = 0.0
        for name, on_link, _offset, _floor2 in plan:
            a = z.get(name, 0.0)
            a = -a if a < 0.0 else a  # abs(), also of -0.0
            if on_link:
                if a > link_dev:
                    link_dev = a
            elif a > node_dev:
                node_dev = a
        for name in row.generic:
            a = abs(z.get(name, 0.0))
            if a > link_dev:
                link_dev = a
        w_link = w_node = 1.0
        run = link[""]
        if link_dev > self.protect_z:
            run.n += 1
            w_link = self.protect_weight if run.n <= self.protect_max else 1.0
        else:
            run.n = 0
        new_tick = row.new_tick
        if new_tick:
            if node_dev > self.protect_z:
                node.protected += 1
            else:
                node.protected = 0
        if 0 < node.protected <= self.protect_max:
            w_node = self.protect_weight
        if row.peer_unreachable:
            w_link = 0.0  # a link to a dead peer says nothing about this link's normal
        a_link, a_node = alpha * w_link, alpha * w_node
        nstats = node.stats
        # a protected sample is also winsorised (clip_z): learned as if it deviated by clip_z
        # standard deviations at most, so an incident inflates neither mean nor variance
        c2 = self.clip2_
        c2l = c2 if w_link < 1.0 else 0.0
        c2n = c2 if w_node < 1.0 else 0.0
        for name, on_link, _offset, floor2 in plan:
            x = xs.get(name)
            if x is None:
                continue
            if on_link:
                if w_link == 0.0:
                    continue
                stats, w, clip2 = link, a_link, c2l
            else:
                if not new_tick:
                    continue  # node metrics repeat on every link of the tick: learn once
                stats, w, clip2 = nstats, a_node, c2n
            st = stats.get(name)
            if st is None:
                st = stats[name] = _Stat()
            st.update(x, w, clip2, clip2 * floor2)
        if w_link > 0.0:
            for name in row.generic:
                x = xs.get(name)
                if x is None:
                    continue  # a counter without a rate yet
                st = link.get(name)
                if st is None:
                    st = link[name] = _Stat()
                st.update(x, a_link, c2l, c2l * GENERIC_FLOOR2)
        queue = row._queue
        if queue is not None and queue[0] > QUEUE_LEARN_ABOVE and w_link > 0.0 and row.warm:
            q = queue[0]
            couplings = self.couplings_
            for name, v in queue[1].items():
                c = couplings.get(name)
                if c is None:
                    c = couplings[name] = _Coupling()
                c.update(v, q, QUEUE_ALPHA)
        if row._counts:
            last = self.counters_.setdefault(key, {})
            for name, tv in row._counts.items():
                before = last.get(name)
                if before is None or tv[0] > before[0]:
                    last[name] = tv
        if new_tick:
            self.trend_.learn_one(row.node_id, xs)
            for name in RATE_METRICS:
                x = xs.get(name)
                if x is None:
                    continue
                if name + "_rate" in xs:
                    st = node.rates.get(name)
                    if st is None:
                        st = node.rates[name] = _Stat()
                    st.update(xs[name + "_rate"], a_node, c2n, c2n * RATE_FLOOR2)
                past = node.past.get(name)
                if past is None:
                    past = node.past[name] = deque(maxlen=self.rate_lag)
                past.append(x)
            node.last_time = row.event_time
        if "restart" in xs:
            node.prev_uptime = xs["restart"]

    def learn_one(self, rec: Any) -> FeatureRow:
        """Score then learn ``rec``; returns its features."""
        row = self.score_one(rec)
        self.learn_row(row)
        return row
