"""The reliability detector: features -> two detectors -> one calibrated score -> alerts.

Per record (in stream order):

1. :class:`~models.reliability.features.NodeContext` turns it into z-scores against its own
   node's and link's baselines (and learns it, protected): the tuned DWCP metrics and every
   other numeric field and ``extra`` metric present (counters as rates,
   :mod:`models.reliability.generic`). The feature set is fleet-wide and grows in stream
   order: a feature joins the forest's columns (and the trees' inputs) in the first batch
   piece that carries it, and every node that lacks it reads 0 (its baseline) there;
2. river Half-Space Trees (:class:`~models.reliability.hst.HSTDetector`, each record scored
   then learned, river's scores computed with numpy a batch piece at a time) and the
   IsolationForest (:class:`~models.reliability.forest.ForestDetector`, scored once per
   batch) score the features; so do the plain deviation ``max |z|`` and the node's
   slow-trend CUSUM (:class:`~models.reliability.trend.TrendTracker`: memory and disk rising
   faster than their usual drift, for a while), and each link's PCA reconstruction error
   (:class:`~models.reliability.residual.LinkResidual`: a record that breaks the way its
   link's metrics move together);
3. each raw score is calibrated to a quantile among recent normal records (ties at the
   middle rank, so a constant score is typical, not extreme) and the five are
   combined into one score in [0, 1] (:mod:`models.reliability.calibration`; the trend by
   default only as the single most surprised detector, and only once it is rarer than
   ``trend_gate``). A record is *flagged* when that score reaches ``threshold`` (a fixed
   quantile, so an adaptive threshold on every raw score). Flagged records are not learned
   by the calibrators or the forest, and HST protects itself;
4. per node and sample interval (tick), the highest score goes to the shared
   :class:`models.alerting.IncidentTracker` with the metrics that deviate most, the probable
   category (:mod:`models.reliability.signatures`) and the model versions;
5. missed heartbeats and unreachable-peer reports (:mod:`models.reliability.heartbeat`) are
   ``crash`` evidence for the silent node. A link record that only says its *peer* is gone is
   not counted against its own node (``attributed``).

Nothing reads a clock except the forest's optional time-based refit, and nothing does I/O.
With ``background=False`` (the default; offline ``--from-file`` scoring) the forest refits
inline at deterministic learned-record counts, so the detector is deterministic for a given
seed and batching; a score never depends on records after it. On the stream the consumer
sets ``background=True`` and hands the forest a process pool
(:meth:`ForestDetector.set_executor`): the same forests, swapped in when they are ready.

Examples
--------
>>> from producers.encode import RecordEncoder
>>> from producers.fleet import Fleet, FleetConfig
>>> fleet = Fleet(FleetConfig(nodes=8, seed=3, interval_s=5.0, incident_rate=0.0))
>>> enc = RecordEncoder(fleet.topology)
>>> records = [r for _ in range(500) for r in enc.records(fleet.step())]
>>> det = ReliabilityDetector(seed=0)
>>> scored, alerts = det.process(records)
>>> flagged = sum(s.flagged for s in scored[8000:])
>>> print(f"flag rate on normal records: {flagged / len(scored[8000:]):.3f}")
flag rate on normal records: 0.014
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from models.alerting import IncidentTracker
from models.reliability.calibration import ScoreCombiner, TailQuantile
from models.reliability.features import (
    RISES_ONLY,
    FeatureBatch,
    FeatureRow,
    NodeContext,
    RowRef,
    as_row,
)
from models.reliability.forest import ForestDetector
from models.reliability.heartbeat import HeartbeatTracker
from models.reliability.hst import HSTDetector
from models.reliability.residual import LinkResidual
from models.reliability.signatures import match_category
from stream.records import Alert, MetricDeviation

__all__ = ["ReliabilityDetector", "RecordScore"]

DETECTORS = ("hst", "forest", "deviation", "trend", "residual")


class RecordScore(NamedTuple):
    """One record's result: combined ``score`` in [0, 1], ``flagged`` (score >= threshold
    and not attributed), ``attributed`` (the record only reports an unreachable peer) and the
    calibrated score of each detector."""

    score: float
    flagged: bool
    attributed: bool
    hst: float
    forest: float
    deviation: float
    trend: float = 0.5
    residual: float = 0.5


@dataclass(slots=True)
class _Tick:
    time: dt.datetime
    score: float
    row: FeatureRow | RowRef  # pickled as the FeatureRow
    region: str | None
    versions: dict[str, str] | None = None  # the model versions that scored it


class ReliabilityDetector:
    """Streaming reliability detector (see the module docstring).

    Parameters
    ----------
    threshold
        Score (a quantile among normal records) at which a record is flagged.
    seed
        Seed of all randomness (trees and forests).
    span, protect_z, queue_explain, rises_only
        Of the per-node context (:class:`NodeContext`). ``queue_explain`` is how much of the
        link metrics' deviations a longer queue explains (a margin on their learned coupling
        to the queue; ``None``: the fixed rule of before 2026-12-07). Chosen on the simulator
        shapes of seeds 7 and 2 (README). ``rises_only``: metrics whose fall is no evidence
        (:data:`~models.reliability.features.RISES_ONLY`; ``()``: all two-sided, as before).
    clip_z
        Robust baselines (:class:`NodeContext`): protected samples are learned winsorised at
        this many standard deviations. ``None`` (the default): plain baselines.
    hst_trees, hst_height, hst_window
        Of the Half-Space Trees.
    forest_window, forest_refit_every, forest_trees, background, refit_interval_s, forest_swap_after
        Of the IsolationForest (:class:`ForestDetector`). Background refits are swapped in
        when ready (timing decides where) unless ``forest_swap_after`` is a number: then every
        refit, inline or background, is installed that many learned records after it started,
        and the answers depend only on the records. ``refit_interval_s`` reads a clock.
    weights, max_weight
        How the calibrated scores are combined (:class:`ScoreCombiner`).
    open_after, hysteresis, resolve_after_s, update_every_s, confirm_s, explained_only
        Of the :class:`IncidentTracker` (per node tick). ``confirm_s`` is the precision/recall
        knob: a score streak opens an incident only once it has lasted that long (crash
        evidence from missed heartbeats opens at once); 0 opens at once. ``explained_only``
        opens only streaks that a signature names (:func:`match_category`): a DWCP fleet's
        precision knob; sources without the DWCP fields have no signatures and never alert.
    heartbeat_factor
        A node is missing after this many of its intervals without a sample.
    trend_lag, trend_k, trend_min_z, trend_weight, trend_gate
        Of the node trend score (:class:`~models.reliability.trend.TrendTracker`: CUSUM of
        the smoothed slope of memory and disk use), a fourth calibrated detector; its weight
        in the combination (``weights`` overrides it; 0, the default: it counts only as the
        most surprised detector, not in the mean); calibrated trend scores below
        ``trend_gate`` count as typical (0.5). Tuned on seed 1.
    residual_weight, residual_window, residual_min_rows, residual_refit_every
        The fifth component (:class:`~models.reliability.residual.LinkResidual`): each link's
        PCA reconstruction error of its z-scores, relative to the link's typical error (how
        badly a record breaks the way the link's metrics move together), fitted on the link's
        last ``residual_window`` normal rows once it has ``residual_min_rows`` and refitted
        every ``residual_refit_every`` more; its weight in the mean of the combination (0:
        off). It never counts as the single most surprised detector (``mean_only``). Its input
        is z-scores, not levels: levels drift, and a window's mean goes stale on the
        simulator's daily patterns (the flag rate tripled). 1,024 rows for up to ~40 features
        keep the fit's variance low; on ASD, 256 rows and a 2,048-row window ranked worse
        (best F1 0.22 against 0.26), refits every 256 rows too (0.24).
    warmup
        Warm records (every baseline they need has warmed up) learned before anything is
        flagged (the calibrators need a scale first).
    learn_below
        The calibrators and the forest learn records scoring below this, except on nodes
        with an open incident or one waiting for confirmation.
    max_protected
        If more than this share of the recent warm records (an average over about
        ``protect_window`` of them) were kept from learning by ``learn_below`` or an open
        incident, the scale is wrong, not the world: records are learned anyway until the
        share falls back (``protect_overrides_`` counts them). Without this, a scale that was
        still settling when scoring began (a short ``warmup``) can flag every record forever:
        nothing flagged is learned, so nothing unflags it. ``1.0``: never.
    source
        Detector name in alerts and incident ids.
    generic_metrics
        Use every numeric field and ``extra`` metric, not only the tuned DWCP table
        (``False``: the table alone, the detector as it was before generic features).
    max_features
        At most this many features (the tuned ones first); later new names are ignored by
        the trees and the forest (``n_features_dropped_`` counts them) but still count in the
        plain deviation.
    """

    def __init__(
        self,
        threshold: float = 0.995,
        seed: int = 0,
        span: int = 360,
        protect_z: float = 4.0,
        queue_explain: float | None = 3.0,
        rises_only: tuple[str, ...] = RISES_ONLY,
        clip_z: float | None = None,
        hst_trees: int = 10,
        hst_height: int = 8,
        hst_window: int = 250,
        forest_window: int = 4096,
        forest_refit_every: int = 20_000,
        forest_trees: int = 100,
        background: bool = False,
        refit_interval_s: float | None = None,
        forest_swap_after: int | None = None,
        weights: dict[str, float] | None = None,
        max_weight: float = 1.0,
        open_after: int = 2,
        hysteresis: float = 0.97,
        resolve_after_s: float = 60.0,
        update_every_s: float = 60.0,
        confirm_s: float = 0.0,
        explained_only: bool = False,
        heartbeat_factor: float = 2.5,
        warmup: int = 3000,
        trend_lag: int = 24,
        trend_k: float = 2.0,
        trend_weight: float = 0.0,
        trend_gate: float = 0.99,
        trend_min_z: float = 1.5,
        residual_weight: float = 1.0,
        residual_window: int = 8192,
        residual_min_rows: int = 1024,
        residual_refit_every: int = 1024,
        learn_below: float = 0.9999,
        max_protected: float = 0.8,
        protect_window: int = 1000,
        source: str = "reliability",
        step: int = 500,
        generic_metrics: bool = True,
        max_features: int = 256,
    ) -> None:
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if confirm_s < 0:
            raise ValueError(f"confirm_s must be >= 0 seconds, got {confirm_s}")
        self.step = step
        self.threshold = threshold
        self.warmup = warmup
        self.learn_below = learn_below
        self.max_protected = max_protected
        self.protect_window = protect_window
        self.protected_share_ = 0.0  # recent share of warm records kept from learning
        self.protected_max_ = 0.0
        self.protect_overrides_ = 0
        self.seed = seed
        self.span = span
        self.protect_z = protect_z
        self.queue_explain = queue_explain
        self.rises_only = tuple(rises_only)
        self.clip_z = clip_z
        self.weights = dict(
            weights
            or {
                "hst": 1.0,
                "forest": 1.0,
                "deviation": 1.0,
                "trend": trend_weight,
                **({"residual": residual_weight} if residual_weight > 0 else {}),
            }
        )
        self.max_weight = max_weight
        self.source = source
        self.trend_lag = trend_lag
        self.trend_k = trend_k
        self.trend_weight = trend_weight
        self.trend_gate = trend_gate
        self.trend_min_z = trend_min_z
        self.generic_metrics = generic_metrics
        self.max_features = max_features
        self.context_ = NodeContext(
            span=span,
            protect_z=protect_z,
            trend_lag=trend_lag,
            trend_k=trend_k,
            trend_min_z=trend_min_z,
            queue_explain=queue_explain,
            rises_only=self.rises_only,
            clip_z=clip_z,
            generic=generic_metrics,
        )
        names = self.context_.feature_names
        self.feature_names_: tuple[str, ...] = names
        self.feature_index_ = {n: i for i, n in enumerate(names)}
        self.n_features_dropped_ = 0
        self.hst_ = HSTDetector(
            n_trees=hst_trees, height=hst_height, window_size=hst_window, features=names, seed=seed
        )
        self.forest_ = ForestDetector(
            n_features=len(names),
            window=forest_window,
            refit_every=forest_refit_every,
            refit_interval_s=refit_interval_s,
            n_estimators=forest_trees,
            background=background,
            seed=seed,
            swap_after=forest_swap_after,
        )
        # per-link PCA reconstruction error (None: the component is off, weight 0)
        self.residual_: LinkResidual | None = (
            LinkResidual(
                window=residual_window,
                min_rows=residual_min_rows,
                refit_every=residual_refit_every,
            )
            if "residual" in self.weights
            else None
        )
        # a step's normal rows the residual learns at its end: (their keys, their rows)
        self.residual_pending_: list[tuple[list[Any], np.ndarray]] = []
        self.calibrators_ = {name: TailQuantile() for name in DETECTORS}
        # the trend score is 0 most of the time: ties take the middle rank, and its tail
        # (CUSUM units) keeps a scale of at least one
        self.calibrators_["trend"] = TailQuantile(mid_rank=True, min_scale=1.0)
        # the residual votes in the mean, never alone as the most surprised detector: its
        # tail is heavier (a link's structure stays changed for a while after an incident);
        # as a max it doubled the false-positive rate on the simulator (README)
        self.combiner_ = ScoreCombiner(self.weights, max_weight=max_weight, mean_only=("residual",))
        self.tracker_ = IncidentTracker(
            source,
            open_after=open_after,
            hysteresis=hysteresis,
            resolve_after_s=resolve_after_s,
            update_every_s=update_every_s,
            confirm_s=confirm_s,
            explained_only=explained_only,
        )
        self.heartbeat_ = HeartbeatTracker(factor=heartbeat_factor)
        self.pending_: dict[str, _Tick] = {}
        self.tick_times_: list[tuple[dt.datetime, str]] = []  # heap of pending ticks' times
        # blocks of normal rows the forest learns at the next step
        self.forest_pending_: list[np.ndarray] = []
        self.watermark_: dt.datetime | None = None
        self.n_seen_ = 0
        self.n_warm_ = 0
        # model_versions' last answer: ((hst window, forest version), versions)
        self._versions: tuple[tuple[int, int], dict[str, str]] | None = None
        self.hst_learned_ = 0  # the trees' learned records as of the record in hand

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a checkpoint from before generic features restores as it was: the table alone
        state.setdefault("generic_metrics", False)
        state.setdefault("max_features", 256)
        state.setdefault("max_protected", 1.0)  # a checkpoint from before the guard: as it was
        state.setdefault("protect_window", 1000)
        state.setdefault("protected_share_", 0.0)
        state.setdefault("protected_max_", 0.0)
        state.setdefault("protect_overrides_", 0)
        state.setdefault("n_features_dropped_", 0)
        state.setdefault("queue_explain", None)  # its context keeps the fixed rule too
        state.setdefault("rises_only", ())  # and two-sided metrics
        state.setdefault("clip_z", None)  # and plain EWMA baselines
        state.setdefault("residual_", None)  # from before the residual component: without it
        state.setdefault("residual_pending_", [])
        state.setdefault("_versions", None)  # (derived: rebuilt at the next read)
        # pending rows one by one (before 2026-12-07): one block
        forest_rows = state.get("forest_pending_", [])
        if forest_rows and np.ndim(forest_rows[0]) == 1:
            state["forest_pending_"] = [np.vstack(forest_rows)]
        res_rows = state["residual_pending_"]
        if res_rows and np.ndim(res_rows[0][1]) == 1:
            state["residual_pending_"] = [
                ([k for k, _ in res_rows], _stack_padded([x[None, :] for _, x in res_rows]))
            ]
        state.setdefault("hst_learned_", state["hst_"].n_learned_ if "hst_" in state else 0)
        state.get("calibrators_", {}).setdefault("residual", TailQuantile())
        if "feature_index_" not in state:
            state["feature_index_"] = {n: i for i, n in enumerate(state["feature_names_"])}
        self.__dict__.update(state)

    # -- the streaming contract ---------------------------------------------------------------
    def score_one(self, rec: Any) -> float:
        """Combined score of one record without learning it (nothing is mutated)."""
        row = self.context_.score_one(rec)
        raw_x = np.array([self._zvector(row)])
        res = (
            float(self.residual_.score_many([(row.node_id, row.peer_id)], raw_x)[0])
            if self.residual_ is not None
            else math.nan
        )
        h = self.hst_.score_one(row.z)
        f = self.forest_.score_one(_absent_as_0(raw_x)[0])
        cal = self._calibrated(row.trend, h, f, res, _deviation(row))
        return self.combiner_.score_one(cal)

    def learn_one(self, rec: Any) -> None:
        """Process one record (scores, learns, tracks); alerts are dropped."""
        self.process([rec])

    # -- batches ------------------------------------------------------------------------------
    def process(
        self, records: Sequence[Any], watermark: dt.datetime | None = None
    ) -> tuple[list[RecordScore], list[Alert]]:
        """Score, learn and track a batch; returns one :class:`RecordScore` per record (in
        order) and the alerts the batch caused. ``watermark`` is the event time the whole
        stream has reached (default: the largest event time seen).

        The batch is cut at every ``step``-th record of the whole stream (counted from its
        first record); the forest scores each piece with what it had learned by the last such
        boundary and learns (and refits) only at boundaries, so scores do not depend on how the
        stream is cut into batches (a file batch of 5,000 and a Kafka poll of a few hundred
        give the same scores).
        """
        step = self.step
        scores: list[RecordScore] = []
        alerts: list[Alert] = []
        i, n = 0, len(records)
        while i < n:
            take = step - (self.n_seen_ % step)
            out, got = self._process_piece(records[i : i + take])
            scores += out
            alerts += got
            i += take
        alerts += self._advance(watermark)
        return scores, alerts

    def _process_piece(self, records: Sequence[Any]) -> tuple[list[RecordScore], list[Alert]]:
        if not records:
            return [], []
        batch = self.context_.learn_many(records)
        if self.generic_metrics:
            self._register(batch)
        raw_x = self._zmatrix(batch)  # one pass for every component
        xs = _absent_as_0(raw_x)
        forest_raw = self.forest_.score_many(xs)
        residual = self.residual_
        keys = batch.keys
        if residual is not None:
            residual_raw = residual.score_many(keys, raw_x)
        else:
            residual_raw = np.full(len(records), math.nan)
        thr, comb, cals = self.threshold, self.combiner_, self.calibrators_
        final = comb.final_
        # a link to a dead peer describes the peer's outage, not this link's normal: no scale
        # learns it (the baselines do not either); learned, its collapsed metrics (z near -40)
        # fattened every calibrator's tail
        skip = batch.unreachable if batch.unreachable.any() else None
        dead = batch.unreachable.tolist()
        hst_raw = self.hst_.score_learn_many(xs, skip)  # river's scores, the batch at once
        hst_learned = self.hst_.learned_after_.tolist()
        devs = self._deviations(batch, raw_x)
        trends = batch.trend
        warm_l = batch.warm.tolist()
        out: list[RecordScore] = []
        alerts: list[Alert] = []
        normal_idx: list[int] = []
        alpha = 1.0 / self.protect_window
        n = len(records)
        a = 0
        while a < n:
            # a chunk of records scored with the calibrators' current scales: each gets the
            # scales it would have met one record at a time as long as no calibrator has
            # learned enough to rescale (TailQuantile.stable_for counts learned values). So
            # the chunk ends at the record whose learning uses up the least room; not every
            # record is learned, so a little more than that room is scored ahead (the rest
            # is scored again in the next chunk)
            room = min(c.stable_for() for c in (*cals.values(), final))
            b = min(n, a + room + room // 4 + 8)
            h_l, f_l, r_l = (x[a:b].tolist() for x in (hst_raw, forest_raw, residual_raw))
            dv_l, tr_l = devs[a:b].tolist(), trends[a:b].tolist()
            if b - a > 1:
                cal = self._calibrated_exact(
                    hst_raw[a:b], forest_raw[a:b], residual_raw[a:b], devs[a:b], trends[a:b]
                )
                combined_all = comb.raw_exact(cal, b - a)
                final_all = final.score_exact(combined_all).tolist()
                combined_l = combined_all.tolist()
                cal_l = {k: v.tolist() for k, v in cal.items()}
            else:  # one record (a flat calibrator's tail rescales at any value): plain floats
                one = self._calibrated(tr_l[0], h_l[0], f_l[0], r_l[0], dv_l[0])
                combined_l = [comb.raw(one)]
                final_all = [final.score_one(combined_l[0])]
                cal_l = {k: [v] for k, v in one.items()}
            hst_l, forest_l, dev_l = cal_l["hst"], cal_l["forest"], cal_l["deviation"]
            trend_l, res_l = cal_l["trend"], cal_l["residual"]
            learned: list[int] = []  # the chunk's rows the calibrators learn
            final_learned: list[float] = []
            for j in range(b - a):
                i = a + j
                self.n_seen_ += 1
                warm = warm_l[i]
                node = keys[i][0]
                self.n_warm_ += warm
                self.hst_learned_ = hst_learned[i]  # the version as of this record
                score = final_all[j] if warm and self.n_warm_ > self.warmup else 0.0
                flagged = score >= thr and not dead[i]
                out.append(
                    RecordScore(
                        score,
                        flagged,
                        dead[i],
                        hst_l[j],
                        forest_l[j],
                        dev_l[j],
                        trend_l[j],
                        res_l[j],
                    )
                )
                warm = warm and not dead[i]  # (not learned: see ``skip``)
                learn = (
                    warm and score < self.learn_below and not self.tracker_.watching(node)
                )
                if warm:
                    share = self.protected_share_
                    share += ((not learn) - share) * alpha
                    self.protected_share_ = share
                    if share > self.protected_max_:
                        self.protected_max_ = share
                    if not learn and share > self.max_protected:
                        learn = True
                        self.protect_overrides_ += 1
                if learn:
                    # learn everything but open incidents and the far tail: protecting by the
                    # flag itself would truncate the scale at the threshold and let it run
                    # away. Rows with cold baselines (z = 0 by default) are not learned: with
                    # many records per sample the warm-up could otherwise end before the
                    # baselines do, and the first real z-scores would open incidents
                    # everywhere for good
                    normal_idx.append(i)
                    learned.append(j)
                    if self.n_warm_ > self.warmup // 2:  # once the components have a scale
                        final_learned.append(combined_l[j])
                alerts += self._track(records[i], batch, i, score, dead[i])
                if len(learned) == room:  # (each calibrator learns at most these)
                    b = i + 1
                    break
            # the calibrators learn the chunk's normal rows at its end: nothing in the chunk
            # read their scales after scoring it, and none can rescale before its last row
            for name, vals in (("hst", h_l), ("forest", f_l), ("deviation", dv_l),
                               ("trend", tr_l), ("residual", r_l)):  # fmt: skip
                cals[name].learn_exact([vals[j] for j in learned])  # (residual: finite only)
            final.learn_exact(final_learned)
            a = b
        # the forest learns at step boundaries of the whole stream only, never at a batch's end
        buf = self.forest_pending_
        if normal_idx:
            buf.append(xs[normal_idx])
            if residual is not None:
                self.residual_pending_.append(([keys[i] for i in normal_idx], raw_x[normal_idx]))
        if self.n_seen_ % self.step == 0:
            if buf:
                self.forest_.learn_many(np.vstack(buf))
                buf.clear()
            pend = self.residual_pending_
            if residual is not None and pend:
                # (the z matrix widens when a new feature comes: narrower rows lack it, nan)
                residual.learn_many(
                    [k for ks, _ in pend for k in ks], _stack_padded([x for _, x in pend])
                )
                pend.clear()
                residual.refit()
        return out, alerts

    def end_history(self) -> None:
        """The records so far were history (a training split, ``--learn-from``): keep what the
        baselines, trees, forest and calibrators learned; forget the incidents, pending ticks,
        heartbeats and the event-time watermark, so live records start with no open incident
        and no node overdue. Idempotent."""
        self.tracker_.nodes.clear()
        self.heartbeat_.beats_.clear()
        self.pending_.clear()
        self.tick_times_.clear()
        self.watermark_ = None

    def flush(self) -> list[Alert]:
        """Emit the ticks still pending (end of a file or a shutdown)."""
        alerts: list[Alert] = []
        for node in list(self.pending_):
            alerts += self._emit_tick(node)
        return alerts

    @property
    def model_versions(self) -> dict[str, str]:
        """Versions of the parts that score (written into every alert; one dict while they
        stay the same: read only, the alerts copy it)."""
        key = (self.hst_learned_ // max(1, self.hst_.window_size), self.forest_.version_)
        cached = self._versions
        if cached is None or cached[0] != key:
            cached = self._versions = (key, {
                "features": f"ctx-span{self.span}",
                "hst": f"hst-s{self.seed}-w{key[0]}",
                "iforest": f"if-s{self.seed}-v{key[1]}",
            })  # fmt: skip
        return cached[1]

    # -- internals ----------------------------------------------------------------------------
    def _register(self, batch: FeatureBatch) -> None:
        """Add the generic features first seen in ``batch`` (in order) to the columns; count
        each value of one that finds no column (beyond ``max_features``)."""
        index = self.feature_index_
        present = ~np.isnan(batch.z)
        unknown = [c for c in batch.generic_columns if batch.columns[c] not in index]
        if not unknown:
            return
        seen = present[:, unknown]
        found = seen.any(axis=0)
        first = seen.argmax(axis=0)
        # first seen first; in one record, in the record's order (the context's column order)
        order = sorted((int(first[k]), c) for k, c in enumerate(unknown) if found[k])
        new: list[str] = []
        for _, c in order:
            if len(index) >= self.max_features:
                self.n_features_dropped_ += int(present[:, c].sum())
                continue
            index[batch.columns[c]] = len(index)
            new.append(batch.columns[c])
        if not new:
            return
        self.feature_names_ = (*self.feature_names_, *new)
        width = len(self.feature_names_)
        self.forest_.resize(width)
        self.forest_pending_ = [
            np.pad(x, ((0, 0), (0, width - x.shape[1]))) for x in self.forest_pending_
        ]
        self.hst_.features = self.feature_names_

    def _zmatrix(self, batch: FeatureBatch) -> np.ndarray:
        """The batch's z-scores in feature order, ``nan`` where absent (the residual's view;
        :func:`_absent_as_0` gives the forest's)."""
        cols = batch.col_index
        take = [cols.get(n, -1) for n in self.feature_names_]
        z = np.concatenate([batch.z, np.full((len(batch), 1), math.nan)], axis=1)
        return z[:, take]

    def _zvector(self, row: FeatureRow) -> list[float]:
        """The row's z-scores in feature order, ``nan`` where absent (the residual's view;
        :func:`_absent_as_0` gives the forest's)."""
        z = row.z
        return [z.get(n, math.nan) for n in self.feature_names_]

    def _deviations(self, batch: FeatureBatch, raw_x: np.ndarray) -> np.ndarray:
        """``_deviation`` of every row: the largest |z| of its columns, or of all its features
        if one was ever dropped (beyond ``max_features``, in ``z`` but in no column)."""
        if self.n_features_dropped_ or not raw_x.shape[1]:
            raw_x = batch.z
        a = np.abs(raw_x)
        return np.where(np.isnan(a), 0.0, a).max(axis=1)  # absent: not in z; max() of none: 0

    def _calibrated_exact(
        self, h: np.ndarray, f: np.ndarray, r: np.ndarray, dev: np.ndarray, trend: np.ndarray
    ) -> dict[str, np.ndarray]:
        """:meth:`_calibrated` of many rows, bit for bit, with the calibrators' current scales."""
        cals = self.calibrators_
        t = cals["trend"].score_exact(trend)
        res = np.full(len(r), 0.5)
        finite = np.isfinite(r)
        if finite.any():
            res[finite] = cals["residual"].score_exact(r[finite])
        return {
            "hst": cals["hst"].score_exact(h),
            "forest": cals["forest"].score_exact(f),
            "deviation": cals["deviation"].score_exact(dev),
            "trend": np.where(t >= self.trend_gate, t, 0.5),
            "residual": res,
        }

    def _calibrated(
        self, trend: float, h: float, f: float, r: float, dev: float
    ) -> dict[str, float]:
        cals = self.calibrators_
        return {
            "hst": cals["hst"].score_one(h),
            "forest": cals["forest"].score_one(f),
            "deviation": cals["deviation"].score_one(dev),
            "trend": _gate(cals["trend"].score_one(trend), self.trend_gate),
            "residual": cals["residual"].score_one(r) if math.isfinite(r) else 0.5,
        }

    def _track(
        self, rec: Any, batch: FeatureBatch, i: int, score: float, unreachable: bool
    ) -> list[Alert]:
        alerts: list[Alert] = []
        (node, peer), ts = batch.keys[i], batch.times[i]
        if ts is None or node is None:
            return alerts
        if self.watermark_ is None or ts > self.watermark_:
            old = self.watermark_
            self.watermark_ = ts
            # ticks of earlier event times are complete now: emitted here, at a point of the
            # stream itself, not at a batch's end, so alerts do not depend on the batching
            alerts += self._emit_before(ts)
            if old is None or (ts - old).total_seconds() >= 1.0 or ts.second != old.second:
                alerts += self._check_heartbeats(ts)
        hb = self.heartbeat_
        if unreachable and peer is not None and hb.is_silent(peer, ts):
            alerts += self._crash_evidence(peer, ts, f"unreachable from {node}")
        hb.observe(node, ts)
        pending = self.pending_.get(node)
        if pending is not None and pending.time != ts:
            alerts += self._emit_tick(node)
            pending = None
        if unreachable:
            score = 0.0  # evidence about the peer, not this node
        if pending is None:
            region = rec.get("region") if isinstance(rec, dict) else getattr(rec, "region", None)
            self.pending_[node] = _Tick(ts, score, batch.ref(i), region, self.model_versions)
            heapq.heappush(self.tick_times_, (ts, node))
        elif score > pending.score:
            pending.score, pending.row = score, batch.ref(i)
            pending.versions = self.model_versions
        return alerts

    def _emit_before(self, ts: dt.datetime) -> list[Alert]:
        """Emit the pending ticks older than ``ts`` (oldest first, then by node)."""
        alerts: list[Alert] = []
        heap, pending = self.tick_times_, self.pending_
        while heap and heap[0][0] < ts:
            t, node = heapq.heappop(heap)
            tick = pending.get(node)
            if tick is not None and tick.time == t:  # else emitted already (stale entry)
                alerts += self._emit_tick(node)
        return alerts

    def _emit_tick(self, node: str) -> list[Alert]:
        tick = self.pending_.pop(node)
        flagged = tick.score >= self.threshold
        row = as_row(tick.row) if flagged else None
        category = match_category(row.z) if row is not None else None
        state = self.tracker_.nodes.get(node)
        if state is not None and state.incident is not None and state.incident.category:
            category = None  # the first probable category sticks for the incident's life
        return self.tracker_.observe(
            node,
            tick.time,
            tick.score,
            self.threshold,
            category=category,
            top_metrics=_top_metrics(row) if row is not None else (),
            model_versions=tick.versions or self.model_versions,
            region=tick.region,
            reason="score above the adaptive threshold" if flagged else "",
        )

    def _crash_evidence(self, node: str, ts: dt.datetime, reason: str) -> list[Alert]:
        alerts = self._emit_tick(node) if node in self.pending_ else []
        return alerts + self.tracker_.observe(
            node,
            ts,
            1.0,
            self.threshold,
            category="crash",
            model_versions=self.model_versions,
            reason=reason,
            confirmed=True,  # a node silent for heartbeat_factor intervals is not a burst
        )

    def _check_heartbeats(self, watermark: dt.datetime) -> list[Alert]:
        alerts: list[Alert] = []
        for miss in self.heartbeat_.check(watermark):
            alerts += self._crash_evidence(miss.node_id, miss.event_time, miss.reason)
        return alerts

    def _advance(self, watermark: dt.datetime | None) -> list[Alert]:
        # Without a watermark from the caller nothing is emitted at a batch's end: the ticks
        # older than the newest event time were emitted when it was reached, and those left
        # are a late record's, emitted when event time next moves on (or by flush), so a
        # late record joins its tick the same way however the stream is cut into batches.
        if watermark is None:
            return []
        alerts: list[Alert] = []
        for node in [n for n, t in self.pending_.items() if t.time < watermark]:
            alerts += self._emit_tick(node)
        return alerts + self._check_heartbeats(watermark)


def _stack_padded(blocks: list[np.ndarray]) -> np.ndarray:
    """The rows of ``blocks`` (2-d) in one matrix, narrower blocks padded with ``nan``."""
    width = max(b.shape[1] for b in blocks)
    return np.vstack([
        b if b.shape[1] == width else np.pad(b, ((0, 0), (0, width - b.shape[1])),
                                             constant_values=np.nan)
        for b in blocks
    ])  # fmt: skip


def _absent_as_0(x: np.ndarray) -> np.ndarray:
    """Absent features read 0 (their baseline), as the trees and the forest see them."""
    return np.where(np.isnan(x), 0.0, x)


def _gate(u: float, gate: float) -> float:
    """A calibrated score below ``gate`` counts as typical (0.5): only a rare trend speaks."""
    return u if u >= gate else 0.5


def _deviation(row: FeatureRow) -> float:
    z = row.z
    return max((abs(v) for v in z.values()), default=0.0)


def _top_metrics(row: FeatureRow, k: int = 3) -> list[MetricDeviation]:
    ranked = sorted(row.values, key=lambda n: -abs(row.z.get(n, 0.0)))[:k]
    return [
        MetricDeviation(
            name=n,
            value=row.values[n],
            baseline=row.baselines.get(n, row.values[n]),
            zscore=round(row.z.get(n, 0.0), 3),
        )
        for n in ranked
    ]
