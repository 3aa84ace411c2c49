"""Per-node context features: how far each metric is from the node's (or link's) own baseline.

Raw telemetry values mean little on their own (a 110 ms RTT is normal on a WAN link and a
disaster on a datacenter link), so every metric is turned into a *z-score against its own
recent baseline*: an exponentially weighted mean and variance kept per link
``(node_id, peer_id)`` for link metrics and per node for node metrics. Heavy-tailed metrics
are taken in log space first, and each metric has a floor on its standard deviation so a
nearly constant metric (disk usage) does not turn noise into huge scores.

Queueing explains latency: when a link's queue is longer than usual (congestion, which is
normal operation), the other link metrics' z-scores move toward 0 by what the queue explains,
so congestion is not mistaken for a path fault. How much a queue explains is learned from the
fleet: each link metric's least-squares slope on the queue's z-score over the rows where the
queue is up (:meth:`NodeContext.coupling`), times a margin (``queue_explain``). A path fault moves
latency, loss and throughput *without* a longer queue, or far beyond what its queue explains.

Two more features carry per-node context that a baseline cannot: ``restart`` (1 right after a
node (re)started, from ``uptime_s``) and the rate of change of slow node metrics
(``mem_util``, ``disk_util``) over the last minutes, against their own normal drift. Each row
also carries the node's ``trend`` score (:class:`~models.reliability.trend.TrendTracker`: a
CUSUM of the smoothed slope of the same metrics), which is not a z-score and is scored as a
detector of its own.

Every other numeric value of a record (the DWCP fields outside :data:`METRICS` and each
metric of its ``extra`` map) is a *generic* feature with one rule for all, counters turned
into per-second rates (:mod:`models.reliability.generic`); ``generic=False`` leaves them out
(the tuned table alone, as before they existed).

The baseline learns with a reduced weight from samples that deviate strongly (protection):
an incident does not become the new normal within minutes, while a lasting level shift
(a provider's throttle, a path change) still does, eventually.

The records of a batch are walked in order by one compiled loop over arrays
(:mod:`models.reliability.kernel`): the state is per link and per node ``(mean, variance,
count)`` for each column, and :meth:`NodeContext.learn_many` gives a :class:`FeatureBatch` of
matrices, one row per record; a :class:`FeatureRow` is built only for a record that is read one
by one (an alert's explanation, :meth:`NodeContext.score_one`).

Examples
--------
>>> import datetime as dt
>>> ctx = NodeContext(span=60)
>>> t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
>>> for i in range(200):
...     rec = {"node_id": "n-1", "peer_id": "n-2", "timestamp": t0 + dt.timedelta(seconds=5 * i),
...            "rtt_ms": 20.0 + (i % 3), "disk_util": 40.0 + 0.01 * (i % 5)}
...     row = ctx.learn_one(rec)
>>> rec = dict(rec, rtt_ms=60.0, timestamp=t0 + dt.timedelta(seconds=1000))
>>> row = ctx.score_one(rec)
>>> round(row.z["rtt_ms"], 1), abs(row.z["disk_util"]) < 1
(21.5, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import msgspec
import numpy as np

from models.reliability import kernel as K
from models.reliability.generic import (
    GENERIC_FLOOR,
    epoch,
    generic_fields,
    generic_values,
    untransform,
)
from models.reliability.trend import TrendTracker
from stream.schema import EXTRA_FIELD, Telemetry, extra_counter

astuple = msgspec.structs.astuple

__all__ = ["METRICS", "MetricSpec", "NodeContext", "FeatureBatch", "FeatureRow", "field_getter"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric the context tracks.

    ``scope`` is ``"link"`` (baseline per ``(node_id, peer_id)``) or ``"node"``; ``offset``
    > 0 means the metric is taken as ``log(x + offset)``; ``floor`` is the smallest standard
    deviation (in transformed units) a z-score divides by.
    """

    name: str
    scope: str
    offset: float
    floor: float

    def transform(self, v: float) -> float:
        """``log(v + offset)`` (``v`` below 0, which no valid record has here, counts as 0)."""
        return math.log((v if v > 0.0 else 0.0) + self.offset) if self.offset else v


#: The metrics the reliability detector reads (any subset may be present in a record).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("rtt_ms", "link", 0.01, 0.03),
    MetricSpec("jitter_ms", "link", 0.001, 0.15),
    MetricSpec("throughput_mbps", "link", 1.0, 0.08),
    MetricSpec("packet_loss", "link", 1e-5, 0.3),
    MetricSpec("retransmits", "link", 1.0, 0.3),
    MetricSpec("congestion_window", "link", 1.0, 0.08),
    MetricSpec("queue_depth", "link", 1.0, 0.3),
    MetricSpec("failure_rate", "link", 1e-2, 0.3),
    MetricSpec("cpu_util", "node", 0.0, 1.5),
    MetricSpec("mem_util", "node", 0.0, 0.5),
    MetricSpec("disk_util", "node", 0.0, 0.2),
    MetricSpec("error_count", "node", 1.0, 0.3),
    MetricSpec("consensus_latency_ms", "node", 0.1, 0.08),
)
#: Metrics whose rise queueing explains by the fixed rule (``queue_explain=None``, and every
#: metric until its slope is learned): their z-score is reduced by the queue's.
QUEUE_EXPLAINS = ("rtt_ms", "jitter_ms", "packet_loss", "retransmits")

#: Fields outside :data:`METRICS` that measure what a field in it measures already (DWCP's
#: bytes per interval are its throughput times the interval; AMST's rate and stream count are
#: how the link's throughput is carried, and no streams is already the unreachable-peer
#: evidence; the error-budget burn follows the failure rate; availability follows restarts):
#: generic features only in records *without* the covering field, e.g. a source that reports
#: bytes but no throughput. With the covering field present they count the same evidence twice
#: (tuning seed 1, reading the AMST stream count too: FPR 2.2% -> 2.6%, recall 95.8% -> 94.4%;
#: not reading it: 2.3%, 95.8%).
COVERED_BY: dict[str, str] = {
    "bytes_tx": "throughput_mbps",
    "bytes_rx": "throughput_mbps",
    "amst_transfer_rate": "throughput_mbps",
    "amst_streams": "throughput_mbps",
    "error_budget_burn_rate": "failure_rate",
    "uptime_pct": "uptime_s",
}

#: Node metrics that also get a rate-of-change feature (``<name>_rate``).
RATE_METRICS = ("mem_util", "disk_util")
#: Metrics whose fall is no evidence of a fault, so their negative z-scores (and their rates')
#: count 0: a disk that empties was cleaned up (rotated logs, a purge). Counted, a daily clean-up
#: gave the largest |z| of most normal records that had a large one (simulator, seed 23), so
#: the deviation detector's normal tail was heavy and a real deviation elsewhere ranked low, and
#: it slowed the node's baselines (protection) for hours after every clean-up.
RISES_ONLY = ("disk_util",)
#: Smallest standard deviation of a rate-of-change feature (transformed units per ``rate_lag``).
RATE_FLOOR = 0.3
RATE_FLOOR2 = RATE_FLOOR * RATE_FLOOR
GENERIC_FLOOR2 = GENERIC_FLOOR * GENERIC_FLOOR


def field_getter(rec: Any) -> Any:
    """``get(name)`` for a mapping or an attribute record (``Telemetry``); missing -> None."""
    if isinstance(rec, Mapping):
        return rec.get
    if type(rec) is Telemetry:  # every schema field is an attribute (None when absent)
        return rec.__getattribute__
    return lambda name: getattr(rec, name, None)


@dataclass(slots=True)
class FeatureRow:
    """Features of one record.

    ``z`` maps feature name -> signed z-score (0 while a baseline warms up); ``values``
    holds the raw values (and each rate of change: its change over ``rate_lag`` samples) and
    :attr:`baselines` the baseline means in raw units (for alerts);
    ``peer_unreachable`` is True when the record says its peer is unreachable (no transfer
    streams to it), which is evidence about the *peer*, not this node. ``warm`` is False
    while a node or link baseline the row's z-scores need is still warming up: its zeros
    are not evidence of normal behaviour (rates of change come online later, as before).
    """

    node_id: str
    peer_id: str | None
    event_time: Any
    new_tick: bool
    z: dict[str, float]
    values: dict[str, float] = field(default_factory=dict)
    peer_unreachable: bool = False
    trend: float = 0.0
    warm: bool = True
    generic: list[str] = field(default_factory=list)  # generic feature names in ``z``
    _x: dict[str, float] = field(default_factory=dict, repr=False)
    _counts: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    # baseline means in transformed units and each table metric's log offset: the raw-unit
    # baselines are only read for an alert's explanation, so they are computed then
    _means: dict[str, float] = field(default_factory=dict, repr=False)
    _offsets: Mapping[str, float] = field(default_factory=dict, repr=False)
    # with the queue up: its z-score and the link metrics' z-scores before it explained them
    _queue: tuple[float, dict[str, float]] | None = field(default=None, repr=False)

    def __setstate__(self, state: Any) -> None:
        # pending ticks' rows are checkpointed: a row pickled before a field existed gets its
        # default, and one from before the raw-unit baselines were derived (they were a field)
        # keeps them as they were (an offset of 0 reads a mean as it is)
        slots = dict(state[1] if isinstance(state, tuple) else state)
        old = slots.pop("baselines", None)
        if old is not None:
            slots.setdefault("_means", dict(old))
            slots.setdefault("_offsets", dict.fromkeys(old, 0.0))
        for f in fields(self):
            if f.name in slots:
                value = slots[f.name]
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, f.name, value)

    @property
    def baselines(self) -> dict[str, float]:
        """Baseline mean of each scored metric in raw units (``values``' units)."""
        out = {}
        offsets = self._offsets
        for name, mean in self._means.items():
            offset = offsets.get(name)
            if offset is None:  # a generic feature
                out[name] = untransform(mean)
            else:
                out[name] = math.exp(mean) - offset if offset else mean
        return out


# -- the dict-based state of checkpoints from before the compiled loop: these classes only
# unpickle it, and NodeContext.__setstate__ moves it into arrays (the arithmetic that used
# them is in tests/models/reference_features.py)
class _Stat:
    __slots__ = ("mean", "var", "n")


class _Coupling:
    __slots__ = ("zq", "qq", "n")


class _Node:
    __slots__ = ("stats", "last_time", "past", "rates", "prev_uptime", "protected")


class NodeContext:
    """Per-node and per-link baselines turned into z-score features.

    Parameters
    ----------
    span
        Baseline memory in samples of one node or link (``alpha = 2 / (span + 1)``).
    min_count
        Samples a baseline needs before its z-scores count (0 before).
    protect_z
        A sample whose largest |z| in its scope exceeds this is learned with weight
        ``protect_weight`` (the baseline does not chase an incident).
    protect_weight
        Relative learning weight of such samples, for at most ``protect_max`` samples in a
        row; after that the deviation is taken as the new normal and learned at full weight.
    protect_max
        See ``protect_weight``.
    rate_lag
        Rate-of-change features compare a node metric with its value this many samples
        (ticks of the node) ago.
    restart_s
        ``restart`` is ``1 - uptime_s / restart_s`` right after a restart (0 after).
    trend_lag, trend_k, trend_min_z
        Slope window (samples) and CUSUM allowance of the node trend score
        (:class:`~models.reliability.trend.TrendTracker`, on :data:`RATE_METRICS`); a metric
        counts in it only while its level's z-score is at least ``trend_min_z``.
    queue_explain
        While a link's queue z-score ``q`` is above 1, each other link metric of the table moves
        toward 0 by ``queue_explain x slope x q`` (never past it), ``slope`` being its learned
        coupling to the queue (module docstring). The margin covers the coupling's curve: a
        long queue comes with more than the slope's share of latency. ``None``: the fixed rule
        of before (RTT, jitter, loss and retransmits reduced by ``q``), which is also used for
        each metric until its coupling has
        :data:`~models.reliability.kernel.QUEUE_MIN_ROWS` rows.
    rises_only
        Metrics (of the table) whose fall is no evidence: a negative z-score of theirs, and of
        their rate of change, counts 0 (:data:`RISES_ONLY`; ``()``: every metric two-sided,
        as before 2026-12-07).
    metrics
        The :class:`MetricSpec` table (default :data:`METRICS`).
    generic
        Also turn every other numeric field and every ``extra`` metric into a feature
        (:mod:`models.reliability.generic`); ``False``: the table alone.
    clip_z
        Robust baselines: a protected sample (see ``protect_z``) is also winsorised, learned as
        if each of its metrics deviated by at most ``clip_z`` standard deviations (Huber's
        rule), so a short incident inflates neither the baseline's mean nor its variance. Without
        it, a two-minute burst left a node's consensus-latency baseline 3.3x its normal width
        20 minutes later, and a critical degradation then peaked at z 4.6 (simulator, seed 21).
        ``None`` (the default): plain exponentially weighted baselines. Measured, not a default:
        it ranks incidents better on every simulator shape and worse on ASD (README).

    The records are walked in order by a compiled loop over arrays
    (:mod:`models.reliability.kernel`); :meth:`learn_many` takes a batch at once and gives a
    :class:`FeatureBatch`, :meth:`learn_one` and :meth:`score_one` one :class:`FeatureRow`.
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
        self.trend_ = TrendTracker(RATE_METRICS, lag=trend_lag, k=trend_k)  # its parameters
        self._empty_state()

    # -- state ----------------------------------------------------------------------------------
    def _empty_state(self) -> None:
        """No node, no link, and the columns of the table (the rates of change and restart
        after it; generic features join as they are first seen)."""
        self.columns_: list[str] = [m.name for m in self.metrics]
        self.columns_ += [f"{n}_rate" for n in RATE_METRICS] + ["restart"]
        self.kinds_: list[int] = [K.LINK if m.scope == "link" else K.NODE for m in self.metrics]
        self.kinds_ += [K.RATE] * len(RATE_METRICS) + [K.RESTART]
        self.node_index_: dict[Any, int] = {}
        self.link_index_: dict[tuple[Any, Any], int] = {}
        f, r = len(self.columns_), len(RATE_METRICS)
        self.link_stats_ = np.zeros((0, f, 3))
        self.link_run_ = np.zeros(0, dtype=np.int64)
        self.counter_ = np.full((0, f, 2), math.nan)
        self.node_stats_ = np.zeros((0, f, 3))
        self.node_i_ = np.zeros((0, 1 + 2 * r), dtype=np.int64)
        self.node_f_ = np.full((0, 2), math.nan)
        self.rate_ring_ = np.zeros((0, r, self.rate_lag))
        self.trend_i_ = np.zeros((0, r, 3), dtype=np.int64)
        self.trend_f_ = np.zeros((0, r, 4))
        self.trend_ring_ = np.zeros((0, r, self.trend_lag))
        self.coupling_ = np.zeros((f, 3))
        self._plan()

    def _plan(self) -> None:
        """The per-column arrays the compiled loop reads (derived from the columns)."""
        self.col_index_ = {n: i for i, n in enumerate(self.columns_)}
        spec = {m.name: m for m in self.metrics}
        f = len(self.columns_)
        self.kind_ = np.array(self.kinds_, dtype=np.int64)
        self.offset_ = np.zeros(f)
        self.floor2_ = np.zeros(f)
        for i, (name, kind) in enumerate(zip(self.columns_, self.kinds_, strict=True)):
            if kind in (K.LINK, K.NODE):
                m = spec[name]
                self.offset_[i], self.floor2_[i] = m.offset, m.floor * m.floor
            elif kind == K.RATE:
                self.floor2_[i] = RATE_FLOOR2
            elif kind != K.RESTART:
                self.floor2_[i] = GENERIC_FLOOR2
        table = self.kind_ <= K.NODE
        self.rises_ = np.array([n in self.rises_only for n in self.columns_]) & table
        self.queue_explains_ = np.array([n in QUEUE_EXPLAINS for n in self.columns_]) & table
        self.coupled_ = (self.kind_ == K.LINK) & (np.array(self.columns_) != "queue_depth")
        self.queue_col_ = self.col_index_["queue_depth"] if "queue_depth" in spec else -1
        self.rate_src_ = np.array([self.col_index_.get(n, -1) for n in RATE_METRICS], np.int64)
        self.rate_col_ = np.array([self.col_index_[f"{n}_rate"] for n in RATE_METRICS], np.int64)
        self.restart_col_ = self.col_index_["restart"]
        self.offsets_ = {m.name: m.offset for m in self.metrics}
        self.offsets_.update({f"{n}_rate": 0.0 for n in RATE_METRICS})  # a rate: as it is
        self.clip2_ = self.clip_z * self.clip_z if self.clip_z else 0.0
        self.generic_cols_ = [i for i, k in enumerate(self.kinds_) if k >= K.GENERIC]

    def _params(self) -> tuple[np.ndarray, np.ndarray]:
        """The parameters the compiled loop reads (see :func:`~models.reliability.kernel.features`)."""
        margin = math.nan if self.queue_explain is None else self.queue_explain
        params = np.array([
            2.0 / (self.span + 1.0), self.min_count, self.protect_z, self.protect_weight,
            self.protect_max, self.clip2_, margin, self.restart_s, self.rate_lag, RATE_FLOOR2,
        ])  # fmt: skip
        tr = self.trend_
        trend = np.array([
            2.0 / (tr.fast_span + 1.0), tr.lag, 2.0 / (tr.var_span + 1.0), tr.k, tr.cap,
            tr.floor, tr.min_count, tr.protect_z, tr.protect_weight, self.trend_min_z,
        ])  # fmt: skip
        return params, trend

    def _add_columns(self, names: list[tuple[str, str]]) -> None:
        """Add generic columns ``(name, counter kind)`` (the state grows by as many)."""
        kinds = {"": K.GENERIC, "delta": K.DELTA, "cumulative": K.CUMULATIVE}
        for name, counter in names:
            self.columns_.append(name)
            self.kinds_.append(kinds[counter])
        k = len(names)
        self.link_stats_ = np.pad(self.link_stats_, ((0, 0), (0, k), (0, 0)))
        self.node_stats_ = np.pad(self.node_stats_, ((0, 0), (0, k), (0, 0)))
        self.counter_ = np.pad(self.counter_, ((0, 0), (0, k), (0, 0)), constant_values=math.nan)
        self.coupling_ = np.pad(self.coupling_, ((0, k), (0, 0)))
        self._plan()

    def _grow(self, links: int, nodes: int) -> None:
        """Room for ``links`` links and ``nodes`` nodes (rows double; new rows are empty)."""
        have = len(self.link_run_)
        if links > have:
            more = max(links, 2 * have, 16) - have
            self.link_stats_ = np.pad(self.link_stats_, ((0, more), (0, 0), (0, 0)))
            self.link_run_ = np.pad(self.link_run_, (0, more))
            self.counter_ = np.pad(self.counter_, ((0, more), (0, 0), (0, 0)),
                                   constant_values=math.nan)  # fmt: skip
        have = len(self.node_f_)
        if nodes > have:
            more = max(nodes, 2 * have, 16) - have
            rows = ((0, more), (0, 0), (0, 0))
            self.node_stats_ = np.pad(self.node_stats_, rows)
            self.node_i_ = np.pad(self.node_i_, ((0, more), (0, 0)))
            self.node_f_ = np.pad(self.node_f_, ((0, more), (0, 0)), constant_values=math.nan)
            self.rate_ring_ = np.pad(self.rate_ring_, rows)
            self.trend_i_ = np.pad(self.trend_i_, rows)
            self.trend_f_ = np.pad(self.trend_f_, rows)
            self.trend_f_[-more:, :, 0] = math.nan  # no trend level yet
            self.trend_ring_ = np.pad(self.trend_ring_, rows)

    _ROWS = ("link_stats_", "link_run_", "counter_")
    _NODE_ROWS = ("node_stats_", "node_i_", "node_f_", "rate_ring_", "trend_i_", "trend_f_",
                  "trend_ring_")  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in [k for k in state if k not in _STATE]:
            del state[name]  # derived from the columns: rebuilt on restore
        links, nodes = len(self.link_index_), len(self.node_index_)
        for name in self._ROWS:
            state[name] = state[name][:links].copy()
        for name in self._NODE_ROWS:
            state[name] = state[name][:nodes].copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a checkpoint from before generic features restores as it was: the table alone
        state.setdefault("generic", False)
        state.setdefault("generic_fields_", ())
        # one from before the learned coupling keeps the fixed rule
        state.setdefault("queue_explain", None)
        state.setdefault("rises_only", ())  # and one from before one-sided metrics: two-sided
        state.setdefault("clip_z", None)  # and one from before robust baselines: plain EWMA
        if "nodes_" in state:  # from before the compiled loop: baselines in dicts of objects
            old: dict[str, Any] = {k: state.pop(k) for k in _OLD_STATE if k in state}
            self.__dict__.update(state)
            self._empty_state()
            self._from_dicts(old)
            return
        self.__dict__.update(state)
        self._plan()

    def _from_dicts(self, old: dict[str, Any]) -> None:
        """Fill the arrays from a checkpoint of the dict-based state (before the compiled loop)."""
        counters = old.get("counters_", {})
        names = {n for link in old.get("links_", {}).values() for n in link if n}
        names |= {n for c in counters.values() for n in c}
        fields = {name: counter for _, name, counter, _ in self.generic_fields_}
        new = sorted(n for n in names if n not in self.col_index_)
        kinds = [(n, fields.get(n, extra_counter(n.removeprefix("extra.").removesuffix(
            "_per_s")) if n.endswith("_per_s") else "")) for n in new]  # fmt: skip
        if kinds:
            self._add_columns(kinds)
        nodes = old.get("nodes_", {})
        links = old.get("links_", {})
        for key in links:
            self._index(key[0], key[1])
        for node in nodes:
            self._node(node)
        self._grow(len(self.link_index_), len(self.node_index_))
        ci = self.col_index_
        for key, stats in links.items():
            r = self.link_index_[key]
            for name, st in stats.items():
                if name == "":
                    self.link_run_[r] = st.n
                else:
                    self.link_stats_[r, ci[name]] = (st.mean, st.var, st.n)
        for key, last in counters.items():
            r = self._index(key[0], key[1])[0]
            for name, (t, v) in last.items():
                self.counter_[r, ci[name]] = (t, v)
        lag = self.rate_lag
        for node_id, node in nodes.items():
            r = self.node_index_[node_id]
            for name, st in node.stats.items():
                self.node_stats_[r, ci[name]] = (st.mean, st.var, st.n)
            for j, name in enumerate(RATE_METRICS):
                st = node.rates.get(name)
                if st is not None:
                    self.node_stats_[r, ci[f"{name}_rate"]] = (st.mean, st.var, st.n)
                past = list(node.past.get(name, ()))[-lag:]
                self.rate_ring_[r, j, : len(past)] = past
                self.node_i_[r, 1 + len(RATE_METRICS) + j] = len(past)
            self.node_i_[r, 0] = node.protected
            self.node_f_[r] = (_epoch_or_nan(node.last_time), _nan_if_none(node.prev_uptime))
        tlag = self.trend_lag
        for node_id, states in self.trend_.nodes_.items():
            r = self._node(node_id)
            self._grow(len(self.link_index_), len(self.node_index_))
            for j, name in enumerate(RATE_METRICS):
                st = states.get(name)
                if st is None:
                    continue
                past = list(st.past)[-tlag:]
                self.trend_ring_[r, j, : len(past)] = past
                self.trend_i_[r, j] = (0, len(past), 1)
                self.trend_f_[r, j] = (_nan_if_none(st.level), st.var, st.cusum, st.n)
        self.trend_ = TrendTracker(RATE_METRICS, lag=self.trend_lag, k=self.trend_k)
        for name, c in old.get("couplings_", {}).items():
            self.coupling_[ci[name]] = (c.zq, c.qq, c.n)

    def _node(self, node_id: Any) -> int:
        r = self.node_index_.get(node_id)
        if r is None:
            r = self.node_index_[node_id] = len(self.node_index_)
        return r

    def _index(self, node_id: Any, peer_id: Any) -> tuple[int, int]:
        key = (node_id, peer_id)
        r = self.link_index_.get(key)
        if r is None:
            r = self.link_index_[key] = len(self.link_index_)
        return r, self._node(node_id)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Every feature a row can carry, in a fixed order (the forest's columns)."""
        return (
            tuple(m.name for m in self.metrics)
            + tuple(f"{n}_rate" for n in RATE_METRICS)
            + ("restart",)
        )

    def coupling(self, name: str) -> tuple[float, int]:
        """``(slope, rows)`` of link metric ``name``'s learned coupling to the queue."""
        zq, qq, n = self.coupling_[self.col_index_[name]]
        return (float(zq / qq) if qq > 0.0 else 0.0), int(n)

    def baseline(self, name: str, node_id: Any, peer_id: Any = None) -> tuple[float, float, int]:
        """``(mean, variance, samples)`` of a baseline in transformed units (a node metric's
        or a rate's by ``node_id``; a link metric's or a generic feature's by the link)."""
        c = self.col_index_[name]
        if self.kinds_[c] in (K.NODE, K.RATE):
            r, stats = self.node_index_.get(node_id), self.node_stats_
        else:
            r, stats = self.link_index_.get((node_id, peer_id)), self.link_stats_
        if r is None:
            return 0.0, 0.0, 0
        mean, var, n = stats[r, c]
        return float(mean), float(var), int(n)

    # -- the batch -----------------------------------------------------------------------------
    def learn_many(self, records: Sequence[Any]) -> FeatureBatch:
        """Score then learn each record in order; returns their features."""
        return self._run(records, learn=True)

    def learn_one(self, rec: Any) -> FeatureRow:
        """Score then learn ``rec``; returns its features."""
        return self._run([rec], learn=True).row(0)

    def score_one(self, rec: Any) -> FeatureRow:
        """Features of ``rec`` against the baselines so far (the record is not learned)."""
        links, nodes = len(self.link_index_), len(self.node_index_)
        try:
            return self._run([rec], learn=False).row(0)
        finally:  # a node or link seen first here is not kept (its state is still empty)
            for index, n in ((self.link_index_, links), (self.node_index_, nodes)):
                while len(index) > n:
                    index.popitem()

    def _run(self, records: Sequence[Any], learn: bool) -> FeatureBatch:
        b = _Extract(self, records)
        n, f = len(records), len(self.columns_)
        self._grow(len(self.link_index_), len(self.node_index_))
        out = np.full((5, n, f), math.nan)
        rows = np.zeros((n, 4))
        params, trend = self._params()
        K.features(
            learn, b.link_of, b.node_of, b.has_node, b.ts, b.values, b.uptime, b.unreachable,
            self.kind_, self.offset_, self.floor2_, self.rises_, self.queue_explains_,
            self.coupled_, self.queue_col_, self.rate_src_, self.rate_col_, self.restart_col_,
            params, trend,
            self.link_stats_, self.link_run_, self.node_stats_, self.node_i_, self.node_f_,
            self.rate_ring_, self.trend_i_, self.trend_f_, self.trend_ring_, self.coupling_,
            self.counter_, out[0], out[1], out[2], out[3], out[4], rows,
        )  # fmt: skip
        return FeatureBatch(self, records, b, out, rows)


def _epoch_or_nan(ts: Any) -> float:
    t = epoch(ts)
    return math.nan if t is None else t


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else float(v)


#: The baselines of a checkpoint from before the compiled loop (dicts of objects).
_OLD_STATE = ("nodes_", "links_", "counters_", "couplings_")
#: What a pickled NodeContext holds (the rest is derived from it by ``_plan``).
_STATE = frozenset({
    "span", "min_count", "protect_z", "protect_weight", "protect_max", "rate_lag", "restart_s",
    "trend_lag", "trend_k", "trend_min_z", "queue_explain", "rises_only", "clip_z", "metrics",
    "generic", "generic_fields_", "trend_", "columns_", "kinds_", "node_index_", "link_index_",
    "link_stats_", "link_run_", "counter_", "node_stats_", "node_i_", "node_f_", "rate_ring_",
    "trend_i_", "trend_f_", "trend_ring_", "coupling_",
})  # fmt: skip


class _Extract:
    """A batch's records as the arrays the compiled loop reads (raw values, NaN: absent)."""

    def __init__(self, ctx: NodeContext, records: Sequence[Any]) -> None:
        n = len(records)
        table = [m.name for m in ctx.metrics]
        fields = ctx.generic_fields_
        wanted = ["node_id", "peer_id", "timestamp", "uptime_s", "amst_streams", *table]
        for field_name, _, _, covering in fields:
            wanted += [field_name, covering] if covering else [field_name]
        if fields:
            wanted.append(EXTRA_FIELD)
        raw = _columns(records, dict.fromkeys(wanted))
        nodes, peers, self.times = raw["node_id"], raw["peer_id"], raw["timestamp"]
        self.keys: list[tuple[Any, Any]] = list(zip(nodes, peers, strict=True))
        index = ctx._index
        # each link once, in the order of first appearance (the order new links and nodes
        # get their rows in), then every record's
        rows_of = {key: index(*key) for key in dict.fromkeys(self.keys)}
        at = np.array([rows_of[key] for key in self.keys], dtype=np.int64)
        self.link_of, self.node_of = at.reshape(n, 2).T.copy()
        self.has_node = np.array([node is not None for node in nodes], dtype=np.bool_)
        seconds = {t: epoch(t) for t in dict.fromkeys(self.times)}  # a tick's records share one
        self.ts = _floats([seconds[t] for t in self.times])
        # every numeric field as one matrix, a row per field (None: NaN)
        numeric = dict.fromkeys(["uptime_s", "amst_streams", *table, *(f[0] for f in fields)])
        at_row = {name: k for k, name in enumerate(numeric)}
        m = _floats([v for name in numeric for v in raw[name]]).reshape(len(numeric), n)
        self.uptime = m[at_row["uptime_s"]]
        peered = np.array([p is not None for p in peers], dtype=bool)
        self.unreachable = (m[at_row["amst_streams"]] == 0.0) & peered
        cells: list[tuple[int, str, float, str]] = []  # (record, feature, value, counter kind)
        for i, extra in enumerate(raw.get(EXTRA_FIELD, ())):
            if extra:
                for name, val, counter in generic_values({EXTRA_FIELD: extra}.get, ()):
                    cells.append((i, name, val, counter))
        # the DWCP fields outside the table, each where its covering field is absent
        cols: list[tuple[str, str, np.ndarray]] = []
        absent = np.isnan(m[[at_row[f[0]] for f in fields]]).all(axis=1) if fields else []
        for k, (field_name, name, counter, covering) in enumerate(fields):
            if absent[k]:
                continue  # in no record of the batch
            col = m[at_row[field_name]]
            if covering:
                covered = np.array([c is not None for c in raw[covering]], dtype=bool)
                if covered.any():
                    col = np.where(covered, math.nan, col)
                    if np.isnan(col).all():
                        continue
            cols.append((name, counter, col))
        new: dict[str, tuple[int, int, str]] = {}  # feature -> (first record, order, counter)
        for k, (name, counter, col) in enumerate(cols):
            if name not in ctx.col_index_:
                new[name] = (int(np.flatnonzero(~np.isnan(col))[0]), k, counter)
        for k, (i, name, val, counter) in enumerate(cells):
            if name not in ctx.col_index_ and name not in new and math.isfinite(val):
                new[name] = (i, len(cols) + k, counter)
        if new:
            ctx._add_columns([(n, new[n][2]) for n in sorted(new, key=new.__getitem__)])
        values = np.full((n, len(ctx.columns_)), math.nan)
        ci = ctx.col_index_
        values[:, [ci[name] for name in table]] = m[[at_row[name] for name in table]].T
        if cols:
            values[:, [ci[name] for name, _, _ in cols]] = np.array([c for _, _, c in cols]).T
        for i, name, val, _ in cells:
            c = ci.get(name)  # (None: never finite yet)
            if c is not None:
                values[i, c] = val
        values[~np.isfinite(values)] = math.nan  # not finite: as if absent
        self.values = values


def _columns(records: Sequence[Any], names: dict[str, None]) -> dict[str, Sequence[Any]]:
    """The records' values of each field in ``names`` (None where absent), field by field."""
    if records and all(type(r) is Telemetry for r in records):
        by_field = list(zip(*map(astuple, records), strict=True))
        return {name: by_field[_POSITION[name]] for name in names}
    out: dict[str, list[Any]] = {name: [] for name in names}
    for rec in records:
        get = field_getter(rec)
        for name, column in out.items():
            column.append(get(name))
    return dict(out)


_POSITION = {name: i for i, name in enumerate(Telemetry.__struct_fields__)}


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Floats of a column of raw values (None: NaN; numpy converts each as ``float`` does)."""
    return np.array(values, dtype=float)


class FeatureBatch:
    """Features of a batch of records, as arrays (one row per record, one column per
    :attr:`NodeContext.columns_` entry, NaN where a feature is absent); :meth:`row` gives
    one record's :class:`FeatureRow`."""

    def __init__(self, ctx: NodeContext, records: Sequence[Any], b: _Extract, out: np.ndarray,
                 rows: np.ndarray) -> None:  # fmt: skip
        self.columns = list(ctx.columns_)
        self.col_index = dict(ctx.col_index_)
        self.generic_columns = list(ctx.generic_cols_)  # (in the order first seen)
        self.records = records
        self.keys = b.keys
        self.z, self.x, self.values, self.means, self.z_before = out
        self.warm = rows[:, 0] > 0.0
        self.new_tick = rows[:, 1] > 0.0
        self.trend = rows[:, 2]
        self.queue = rows[:, 3]
        self.unreachable = b.unreachable
        self.times = b.times
        self._offsets = ctx.offsets_
        self._generic_fields = ctx.generic_fields_
        self._table = len(ctx.metrics)
        self._tail = [ctx.col_index_[f"{n}_rate"] for n in RATE_METRICS]
        self._restart = ctx.col_index_["restart"]
        self._coupled = np.flatnonzero(ctx.coupled_).tolist()
        self._queued = ctx.queue_explain is not None

    def __len__(self) -> int:
        return len(self.records)

    def row(self, i: int) -> FeatureRow:
        """Record ``i``'s features as a :class:`FeatureRow`."""
        rec = self.records[i]
        get = field_getter(rec)
        col = self.col_index
        generic = [n for n, _, _ in generic_values(get, self._generic_fields)
                   if n in col and not math.isnan(self.z[i, col[n]])]  # fmt: skip
        order = [*range(self._table), *(col[n] for n in generic), *self._tail, self._restart]
        z: dict[str, float] = {}
        xs: dict[str, float] = {}
        values: dict[str, float] = {}
        means: dict[str, float] = {}
        zr, xr, vr, mr = (a[i].tolist() for a in (self.z, self.x, self.values, self.means))
        for c in order:
            name = self.columns[c]
            if zr[c] == zr[c]:
                z[name] = zr[c]
            if xr[c] == xr[c]:
                xs[name] = xr[c]
            if vr[c] == vr[c] and c != self._restart:
                values[name] = vr[c]
            if mr[c] == mr[c]:
                means[name] = mr[c]
        queue = None
        q = float(self.queue[i])
        if q > 1.0 and self._queued:
            zb = self.z_before[i].tolist()
            queue = (q, {self.columns[c]: zb[c] for c in self._coupled if zb[c] == zb[c]})
        return FeatureRow(
            node_id=get("node_id"),
            peer_id=get("peer_id"),
            event_time=self.times[i],
            new_tick=bool(self.new_tick[i]),
            z=z,
            values=values,
            peer_unreachable=bool(self.unreachable[i]),
            trend=float(self.trend[i]),
            warm=bool(self.warm[i]),
            generic=generic,
            _x=xs,
            _means=means,
            _offsets=self._offsets,
            _queue=queue,
        )

    def ref(self, i: int) -> RowRef:
        """Record ``i``'s row, built only when read (:meth:`RowRef.get`)."""
        return RowRef(self, i)


class RowRef:
    """A :class:`FeatureBatch` row not built yet: most rows are never read one by one. It
    pickles (and copies) as the :class:`FeatureRow` it stands for."""

    __slots__ = ("batch", "i")

    def __init__(self, batch: FeatureBatch, i: int) -> None:
        self.batch, self.i = batch, i

    def get(self) -> FeatureRow:
        return self.batch.row(self.i)

    def __reduce__(self) -> tuple[Any, tuple[FeatureRow]]:
        return _same, (self.get(),)


def _same(row: FeatureRow) -> FeatureRow:
    return row


def as_row(row: FeatureRow | RowRef) -> FeatureRow:
    """The :class:`FeatureRow` of a row or of a reference to one."""
    return row.get() if isinstance(row, RowRef) else row
