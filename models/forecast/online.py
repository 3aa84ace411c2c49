"""The online bandwidth forecaster: a per-link, per-horizon ensemble of an LSTM (retrained in
micro-batches) and simple baselines, combined online from recent error, with conformal
intervals on the published forecast.

One call of :meth:`OnlineForecaster.process` handles a batch of link records in arrival order:

1. swap in a finished background retrain (new weights, ``version + 1``); the batch is then
   cut into consecutive chunks with at most ``capacity - window - max(horizons)`` records of
   any link (:func:`~models.forecast.windows.key_chunks`), and each chunk goes through 2-5;
2. append each record to its link's ring buffer (duplicates by event time are skipped);
3. every member forecasts every horizon: persistence, EWMA and the harmonic mean of the last
   ``harmonic_k`` values from the first sample, the LSTM once fitted and the link has a full
   window;
4. record by record (per link in order; links side by side), the forecasts made ``h`` steps
   earlier that the record resolves update the members' discounted errors, then the
   :class:`~models.forecast.ensemble.OnlineCombiner` weighs the members for the record's own
   forecast from those errors only: a forecast made at ``t`` never sees a value after ``t``;
5. score the resolved forecasts (the published one, every member; MAE, MAPE and the coverage
   of the interval published with them), feed the published forecast's log residuals to the
   interval quantiles and the LSTM's error to the drift detector; once enough windows exist,
   fit the LSTM (warm-up; in the background like a retrain, inline with ``background=False``),
   afterwards retrain it in the background every
   ``retrain_every`` records or when drift is detected.

**Steps.** Whatever touches more than one link happens only at *step boundaries*, after every
``step_records`` input records (counted over all calls): the LSTM's warm-up fit, scheduled and
drift retrains (with ``background=False``), the interval quantiles the next forecasts use, the
fleet prior of the combiner and the estimate of the sampling interval. Between boundaries each
link is handled on its own, record by record. So the same records in the same order give the
same forecasts however they are cut into batches (a file, a live stream, a backlog after a
restart; with the application shell's event-time order also six partitions or one): tested
in ``tests/models/test_forecast_ensemble.py``. A background retrain is swapped in at the start of
a call, when it is done: live, its timing is the machine's.

A forecast is returned for a record once its link has a full window and every horizon has
interval residuals at the last step boundary. Pure code: no Kafka, no files, no clock other
than timing a retrain.

Examples
--------
Before the LSTM's warm-up the ensemble of baselines is published:

>>> import numpy as np
>>> f = OnlineForecaster(window=4, horizons=(1,), warmup_windows=10**9, min_residuals=5,
...                      step_records=5)
>>> ts = np.arange(20.0)
>>> run = lambda t: f.process(["a"] * len(t), t, 100 + t, 1 + 0 * t, 1 + 0 * t, 0 * t)
>>> len(run(ts[:10]).index)            # intervals need min_residuals residuals first
0
>>> out = run(ts[10:])
>>> len(out.index), f.version_, f.records_, out.members
(10, 0, 20, ('lstm', 'persistence', 'ewma', 'harmonic'))
>>> [f.members[int(m)] for m in out.weights[-1].argmax(axis=1)]   # a ramp: the last value
['persistence']
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.forecast.accuracy import AccuracyTracker
from models.forecast.baselines import EWMABaseline, HarmonicBaseline
from models.forecast.drift import DriftTrigger
from models.forecast.ensemble import OnlineCombiner
from models.forecast.intervals import ResidualQuantiles
from models.forecast.lstm import LSTMForecaster
from models.forecast.retrain import BackgroundTrainer, RetrainsInBackground
from models.forecast.windows import (
    FEATURES,
    LinkHistory,
    key_chunks,
    row_sum,
    step_features,
    step_pieces,
)

log = logging.getLogger(__name__)

#: Ensemble members, in column order; every one but the LSTM is a baseline.
MEMBERS = ("lstm", "persistence", "ewma", "harmonic")
LSTM, PERSISTENCE, EWMA, HARMONIC = range(4)


@dataclass
class ForecastBatch:
    """Forecasts of one :meth:`OnlineForecaster.process` call.

    ``index`` are positions in the input records; ``value``/``lower``/``upper`` are
    ``(len(index), len(horizons))`` in the target's unit; ``versions`` is the LSTM version of
    each row (a warm-up or a synchronous retrain can fall inside a long batch) and ``version``
    the latest of them; ``weights`` ``(len(index), len(horizons), len(members))`` are the
    ensemble weights that made each published value.
    """

    index: np.ndarray
    keys: list[Hashable]
    value: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    version: int
    events: list[str] = field(default_factory=list)
    versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    members: tuple[str, ...] = MEMBERS


@dataclass
class Prefetched:
    """LSTM inference started by :meth:`OnlineForecaster.prefetch`: ``key`` = the model
    version, the records seen before the call, the call's length and the ``start, stop`` of the
    input records it covers; the positions among them with a full window, and the future of
    their log forecasts."""

    key: tuple[int, int, int, int, int]
    index: np.ndarray
    future: Future[np.ndarray] | None
    n_horizons: int

    def wait(self) -> None:
        """Block until the inference is done (raising its error, if any)."""
        if self.future is not None:
            self.future.result()

    def result(self) -> tuple[tuple[int, int, int, int, int], np.ndarray]:
        """Wait for the inference; ``(key, (stop - start, H) log forecasts)`` (NaN where a
        record has no full window), as :meth:`OnlineForecaster._infer_ahead` returns them."""
        *_, a, b = self.key
        out = np.full((b - a, self.n_horizons), np.nan)
        if self.future is not None:
            out[self.index] = self.future.result()
        return self.key, out


class OnlineForecaster(RetrainsInBackground):
    """Online multi-horizon bandwidth forecaster (see the module docstring).

    Parameters
    ----------
    window, horizons, units, seed
        LSTM shape (see :class:`~models.forecast.lstm.LSTMForecaster`) and its seed.
    capacity
        Steps kept per link (training windows come from them).
    warmup_windows, warmup_epochs
        Windows needed before the first fit, and its epochs.
    retrain_every, retrain_windows, retrain_epochs
        Records between scheduled retrains, windows sampled per retrain, epochs per retrain.
    coverage, residual_size, min_residuals
        Nominal interval coverage, the rolling residual buffer per horizon, and the residuals
        a horizon needs before forecasts are returned.
    ewma_alpha, harmonic_k
        Smoothing of the EWMA member, values in the harmonic-mean member.
    rule, memory, eta, prior_strength, shrink
        The combination (see :class:`~models.forecast.ensemble.OnlineCombiner`).
    step_tolerance
        A forecast ``h`` steps ahead is scored (and its error used) only if its target came
        ``h`` intervals later within this fraction of an interval; ``None``: irregularly
        sampled links, the target is the ``h``-th next sample whenever it came.
    drift_delta, drift_chunk
        ADWIN confidence and errors averaged per ADWIN update.
    background
        Retrain in the background, in a thread or in the executor given with :meth:`train_in`
        (``False``: synchronously, for reproducible runs).
    step_records
        Input records between two step boundaries (see the module docstring).
    infer_ahead
        Input records whose LSTM forecasts are inferred in one batch, ahead of their step
        pieces (from the buffers and the records themselves; again after a model swap). The
        forecasts are the same as one piece at a time (0), at about half the cost per row.
    retrain_pause_s
        Sleep after each training minibatch of a background retrain.
    learning_rate, batch_size
        Adam step size and minibatch size of every fit.
    """

    def __init__(
        self,
        window: int = 30,
        horizons: Sequence[int] = (1, 5, 15),
        units: int = 32,
        capacity: int = 512,
        warmup_windows: int = 20000,
        warmup_epochs: int = 4,
        retrain_every: int = 50000,
        retrain_windows: int = 16384,
        retrain_epochs: int = 1,
        coverage: float = 0.9,
        residual_size: int = 5000,
        min_residuals: int = 50,
        ewma_alpha: float = 0.3,
        harmonic_k: int = 5,
        rule: str = "ewa",
        memory: float = 50.0,
        eta: float = 20.0,
        prior_strength: float = 10.0,
        shrink: float = 1000.0,
        step_tolerance: float | None = 0.5,
        drift_delta: float = 0.002,
        drift_chunk: int = 200,
        background: bool = True,
        retrain_pause_s: float = 0.01,
        learning_rate: float = 3e-3,
        batch_size: int = 256,
        seed: int = 0,
        step_records: int = 100,
        infer_ahead: int = 1024,
    ) -> None:
        self.window, self.horizons, self.units = window, tuple(horizons), units
        self.batch_size, self.capacity = batch_size, capacity
        self.warmup_windows, self.warmup_epochs = warmup_windows, warmup_epochs
        self.retrain_every, self.retrain_windows = retrain_every, retrain_windows
        self.retrain_epochs, self.coverage = retrain_epochs, coverage
        self.residual_size, self.min_residuals = residual_size, min_residuals
        self.ewma_alpha, self.harmonic_k = ewma_alpha, harmonic_k
        self.rule, self.memory, self.eta = rule, memory, eta
        self.prior_strength, self.step_tolerance = prior_strength, step_tolerance
        self.drift_delta, self.drift_chunk = drift_delta, drift_chunk
        self.retrain_pause_s = retrain_pause_s
        self.background, self.learning_rate, self.seed = background, learning_rate, seed
        if step_records < 1:
            raise ValueError(f"step_records must be >= 1, got {step_records}")
        self.step_records = step_records
        if infer_ahead < 0:
            raise ValueError(f"infer_ahead must be >= 0, got {infer_ahead}")
        self.infer_ahead = infer_ahead
        if capacity < window + max(self.horizons) + 64:
            raise ValueError(f"capacity {capacity} too small for window {window} + horizons")
        self.members = MEMBERS
        self.history_ = LinkHistory(len(FEATURES), capacity)
        self.ewma_ = EWMABaseline(ewma_alpha)
        self.harmonic_ = HarmonicBaseline(harmonic_k)
        self.combiner_ = OnlineCombiner(
            MEMBERS, self.horizons, rule=rule, memory=memory, eta=eta,
            prior_strength=prior_strength, default="persistence", shrink=shrink,
        )  # fmt: skip
        self.accuracy_ = AccuracyTracker(
            self.horizons, sources=("model", *MEMBERS), baselines=MEMBERS[1:]
        )
        self.quantiles_ = ResidualQuantiles(self.horizons, coverage, residual_size)
        self.drift_ = DriftTrigger(delta=drift_delta, chunk=drift_chunk)
        self.model_ = self._new_model()
        self.trainer_ = BackgroundTrainer(
            self._new_model(), background=background, pause_s=retrain_pause_s
        )
        self.version_ = 0
        self.records_ = 0
        self.since_retrain_ = 0
        self.retrains_: list[dict[str, Any]] = []
        self.interval_: float | None = None
        self._rng = np.random.default_rng(seed)
        H, M = len(self.horizons), len(MEMBERS)
        self.fc_ = np.full((0, capacity, M, H), np.nan)  # member forecasts made at (row, step)
        self.pub_ = np.full((0, capacity, H, 3), np.nan)  # published value, lower, upper

    # step state (class defaults: a checkpoint from before step boundaries restores with them)
    step_records = 100
    infer_ahead = 1024
    seen_ = 0  # input records handed to process(), over all calls
    drift_pending_ = False  # drift seen since the last boundary: retrain at the next one
    bounds_: tuple[np.ndarray, bool] | None = None  # interval quantiles and "have" at the last one
    gaps_: list[np.ndarray] | None = None  # sampling gaps seen until the interval is known
    report_every = 0  # records between accuracy reports (0: none), set by the caller
    reset_accuracy_at = 0  # restart the accuracy figures once this many records were read
    reports_: list[tuple[int, str, dict[int, dict[str, Any]]]] | None = None  # not yet taken
    last_report_: int | None = None  # records_ at the last report
    records_at_boundary_: int | None = None  # records_ at the last boundary

    def _new_model(self) -> LSTMForecaster:
        return LSTMForecaster(
            window=self.window,
            horizons=self.horizons,
            units=self.units,
            epochs=self.warmup_epochs,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    @property
    def ready(self) -> bool:
        """True once the LSTM has been fitted (version >= 1)."""
        return self.version_ > 0

    @property
    def model_version(self) -> str:
        """Version label written into predictions (the LSTM member's version)."""
        return f"bandwidth-lstm-v{self.version_}"

    # -- the batch step ----------------------------------------------------------------------
    def process(
        self,
        keys: Sequence[Hashable],
        ts: np.ndarray,
        throughput: np.ndarray,
        rtt: np.ndarray,
        jitter: np.ndarray,
        loss: np.ndarray,
        prefetched: Prefetched | None = None,
    ) -> ForecastBatch:
        """Handle a batch of link records (arrays aligned with ``keys``, ``ts`` in epoch s).

        The batch may hold any number of records per link: it is handled in consecutive
        chunks that each fit the ring buffers (:func:`~models.forecast.windows.key_chunks`).
        ``prefetched``: what :meth:`prefetch` started for these same inputs (used if the model
        was not swapped since).
        """
        events: list[str] = []
        self.reports_ = []  # reports index this call's records
        first = prefetched.result() if prefetched is not None else None  # before any swap
        self._swap(events)
        call = (self.version_, self.seen_, len(keys))
        ts, tp, feats = self._step_inputs(ts, throughput, rtt, jitter, loss)
        limit = self.capacity - self.window - max(self.horizons)
        parts: list[tuple[Any, ...]] = []
        pieces = step_pieces(len(keys), self.seen_, self.step_records)
        # LSTM log forecasts inferred ahead for inputs ahead_at.. with model version ahead_v
        ahead, ahead_at, ahead_v = np.zeros((0, len(self.horizons))), 0, -1
        for lo, hi in pieces:
            for a, b in key_chunks(keys[lo:hi], limit):
                a, b = a + lo, b + lo
                lstm = None
                if self.ready and self.infer_ahead > 0:
                    if ahead_v != self.version_ or b > ahead_at + len(ahead):
                        # up to the first step boundary infer_ahead records on (at least to b)
                        end = next((e for _, e in pieces if e >= a + self.infer_ahead), len(keys))
                        end = max(b, end)
                        if first is not None and first[0] == (*call, a, end):
                            ahead = first[1]  # inferred by prefetch(), from the same windows
                        else:
                            ahead = self._infer_ahead(keys, ts, feats, a, end)
                        ahead_at, ahead_v, first = a, self.version_, None
                    lstm = ahead[a - ahead_at : b - ahead_at]
                i, *rest = self._process_chunk(
                    keys[a:b], ts[a:b], tp[a:b], feats[a:b], events, lstm
                )
                parts.append((i + a, *rest))
                self.seen_ += b - a
            if self.seen_ % self.step_records == 0:
                self._boundary(events, hi - 1)
        H, M = len(self.horizons), len(MEMBERS)
        if not parts or not sum(len(p[0]) for p in parts):
            empty = np.zeros((0, H))
            return ForecastBatch(
                np.zeros(0, np.int64), [], empty, empty, empty, self.version_, events,
                np.zeros(0, np.int64), np.zeros((0, H, M)),
            )  # fmt: skip
        cat = [np.concatenate([p[k] for p in parts]) for k in (0, 2, 3, 4, 5, 6)]
        return ForecastBatch(
            index=cat[0],
            keys=[k for p in parts for k in p[1]],
            value=cat[1],
            lower=cat[2],
            upper=cat[3],
            version=int(cat[5][-1]),
            events=events,
            versions=cat[5],
            weights=cat[4],
        )

    def prefetch(
        self,
        keys: Sequence[Hashable],
        ts: np.ndarray,
        throughput: np.ndarray,
        rtt: np.ndarray,
        jitter: np.ndarray,
        loss: np.ndarray,
        executor: Executor,
    ) -> Prefetched | None:
        """Start, in ``executor`` (a thread), the LSTM inference that :meth:`process` of these
        same inputs begins with, so it runs beside other work (TensorFlow releases the GIL);
        hand the result to that :meth:`process` call, the next call on this forecaster. The
        windows are gathered here, so the forecasts are those :meth:`process` would infer
        (a model swapped in at its start makes it infer them again). ``None``: nothing to
        infer."""
        n = len(keys)
        if not (self.ready and self.infer_ahead > 0 and n):
            return None
        ts, _tp, feats = self._step_inputs(ts, throughput, rtt, jitter, loss)
        pieces = step_pieces(n, self.seen_, self.step_records)
        lo, hi = pieces[0]
        b = lo + key_chunks(keys[lo:hi], self.capacity - self.window - max(self.horizons))[0][1]
        end = max(b, next((e for _, e in pieces if e >= self.infer_ahead), n))
        _ok, index, win = self.history_.peek(keys[:end], ts[:end], feats[:end], self.window)
        future = executor.submit(self.model_.predict, win) if len(index) else None
        return Prefetched((self.version_, self.seen_, n, 0, end), index, future, len(self.horizons))

    def _step_inputs(
        self,
        ts: np.ndarray,
        throughput: np.ndarray,
        rtt: np.ndarray,
        jitter: np.ndarray,
        loss: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Event times, cleaned throughput and the step features of a batch."""
        ts, tp, rtt, jitter, loss = (
            np.asarray(x, dtype=float) for x in (ts, throughput, rtt, jitter, loss)
        )
        tp = np.maximum(np.nan_to_num(tp), 0.0)
        return ts, tp, step_features(ts, tp, rtt, jitter, loss)

    def _infer_ahead(
        self, keys: Sequence[Hashable], ts: np.ndarray, feats: np.ndarray, a: int, b: int
    ) -> np.ndarray:
        """The LSTM's log forecasts ``(b - a, H)`` for input records ``a:b`` (NaN where a record
        will be skipped or its window is not full), in one batch, from the buffers as they are
        before record ``a`` is appended (:meth:`LinkHistory.peek`)."""
        _ok, index, win = self.history_.peek(keys[a:b], ts[a:b], feats[a:b], self.window)
        out = np.full((b - a, len(self.horizons)), np.nan)
        if len(index):
            out[index] = self.model_.predict(win)
        return out

    def _process_chunk(
        self,
        keys: Sequence[Hashable],
        ts: np.ndarray,
        throughput: np.ndarray,
        feats: np.ndarray,
        events: list[str],
        lstm: np.ndarray | None = None,
    ) -> tuple[
        np.ndarray, list[Hashable], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
    ]:
        """Steps 2-5 of the module docstring for records that fit the ring buffers
        (``throughput`` cleaned, ``feats`` their step features; ``lstm``: the LSTM's log
        forecasts inferred ahead, aligned with the records, or None to infer here)."""
        hist, cap = self.history_, self.capacity
        rows, steps, ok = hist.append(keys, ts, feats, throughput)
        self._grow(len(hist.count))
        self.records_ += len(rows)
        self.since_retrain_ += len(rows)
        if self.interval_ is None:
            self._collect_gaps(rows, steps)
        vals = throughput[ok]
        fc = np.full((len(rows), len(MEMBERS), len(self.horizons)), np.nan)
        fc[:, PERSISTENCE] = vals[:, None]
        fc[:, EWMA] = self.ewma_.update(rows, vals)[:, None]
        fc[:, HARMONIC] = self.harmonic_.update(rows, vals)[:, None]
        full = steps >= self.window - 1
        version = self.version_
        if self.ready and full.any():
            at = np.flatnonzero(ok)[full]
            if lstm is not None and np.array_equal(at, np.flatnonzero(~np.isnan(lstm[:, 0]))):
                logf = lstm[at]
            else:  # nothing inferred ahead (or not for these records): infer them now
                logf = self.model_.predict(hist.windows(rows[full], steps[full], self.window))
            fc[full, LSTM] = np.maximum(np.expm1(logf), 0.0)
        pos = steps % cap
        self.fc_[rows, pos] = fc
        self.pub_[rows, pos] = np.nan
        weights = np.zeros((len(rows), len(self.horizons), len(MEMBERS)))
        if self.bounds_ is None:
            self._snapshot_bounds()
        assert self.bounds_ is not None
        q, have = self.bounds_  # (H, 2) and "enough residuals", as of the last boundary
        order = self.seen_ + np.flatnonzero(ok)  # each record's position in the stream
        # record by record per link (the k-th record of every link at once): resolve, combine
        first = hist.count[rows] - np.bincount(rows, minlength=len(hist.count))[rows]
        rank = steps - first
        resolved = [self._resolved(rows, steps, h) for h in self.horizons]
        for k in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = np.flatnonzero(rank == k)
            self._resolve(rows, vals, order, sel, resolved)
            sel = sel[full[sel]]
            if not len(sel):
                continue
            w = self.combiner_.weights(
                rows[sel], np.isfinite(fc[sel]).transpose(0, 2, 1), fc[sel, EWMA, 0]
            )
            value = row_sum(w * np.nan_to_num(fc[sel]).transpose(0, 2, 1))
            weights[sel] = w
            lv = np.log1p(value)
            self.pub_[rows[sel], pos[sel]] = np.stack(
                [value, np.expm1(lv + q[:, 0]), np.expm1(lv + q[:, 1])], axis=2
            ).clip(0.0)
        # score after forecasting: a record can resolve a forecast made earlier in this batch
        self._score(rows, vals, events, resolved)
        out = np.flatnonzero(full) if have else np.zeros(0, np.int64)
        pub = self.pub_[rows[out], pos[out]]  # (n, H, 3)
        return (
            np.flatnonzero(ok)[out],
            [hist.keys[r] for r in rows[out]],
            pub[..., 0],
            pub[..., 1],
            pub[..., 2],
            weights[out],
            np.full(len(out), version, np.int64),
        )

    # -- internals ---------------------------------------------------------------------------
    def _grow(self, n_rows: int) -> None:
        have = len(self.fc_)
        if n_rows > have:
            extra = max(n_rows - have, 16)
            self.fc_ = np.concatenate([self.fc_, np.full((extra, *self.fc_.shape[1:]), np.nan)])
            self.pub_ = np.concatenate([self.pub_, np.full((extra, *self.pub_.shape[1:]), np.nan)])

    def _boundary(self, events: list[str], last: int) -> None:
        """A step boundary: everything that touches more than one link (module docstring);
        ``last`` is the step's last record (its index in this call's input)."""
        self.combiner_.flush_prior()
        self._report(last)
        if self.interval_ is None and self.gaps_:
            gaps = np.concatenate(self.gaps_)
            if len(gaps) >= 3:
                self.interval_ = float(np.median(gaps))
                self.gaps_ = None
        # after the forecasts of the step: its windows' targets train the fit
        if not self.ready:
            self._maybe_warm_up(events)
        elif self.since_retrain_ >= self.retrain_every:
            self._retrain("scheduled", events)
        elif self.drift_pending_:
            self._retrain("drift", events)
        self.drift_pending_ = False
        self._snapshot_bounds()

    def _report(self, last: int) -> None:
        """The accuracy at this boundary: a restart of the figures once ``reset_accuracy_at``
        records have been read, a report once ``report_every`` more records have been read
        since the last one (and something was scored)."""
        acc = self.accuracy_
        acc.flush()
        before, self.records_at_boundary_ = self.records_at_boundary_, self.records_
        if self.last_report_ is None:  # the first boundary (or one restored from before reports)
            self.last_report_ = self.records_
        if before is None:
            return
        if self.reset_accuracy_at and before < self.reset_accuracy_at <= self.records_:
            acc.reset()
        if self.report_every and self.records_ - self.last_report_ >= self.report_every:
            summary = acc.summary()
            if any(s["n"] for s in summary.values()):  # nothing scored yet: not now
                self.last_report_ = self.records_
                self.reports_ = [*(self.reports_ or []), (last, self.model_version, summary)]

    def take_reports(self) -> list[tuple[int, str, dict[int, dict[str, Any]]]]:
        """Accuracy reports of the last :meth:`process` call: ``(index of the record it was
        made after, the model version then, summary)`` each. Made at step boundaries, so the
        same records give the same reports however they arrive; take them after every call."""
        out, self.reports_ = self.reports_ or [], []
        return out

    def _snapshot_bounds(self) -> None:
        """The interval quantiles (and whether every horizon has enough residuals) that the
        forecasts until the next boundary use."""
        q = np.array([self.quantiles_.bounds(h) for h in self.horizons])  # (H, 2)
        have = min(self.quantiles_.n_[h] for h in self.horizons) >= self.min_residuals
        self.bounds_ = (q, bool(have))

    def _collect_gaps(self, rows: np.ndarray, steps: np.ndarray) -> None:
        """Sampling gaps seen before the interval is known (estimated at the next boundary)."""
        hist = self.history_
        m = steps >= 1
        gaps = hist.times_at(rows[m], steps[m]) - hist.times_at(rows[m], steps[m] - 1)
        gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
        if len(gaps):
            self.gaps_ = [*(self.gaps_ or []), gaps]

    def _resolved(
        self, rows: np.ndarray, steps: np.ndarray, h: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask of the records that resolve a forecast made ``h`` steps earlier, and its step."""
        src = steps - h
        m = src >= 0
        if self.step_tolerance is not None:
            if self.interval_ is None:
                return np.zeros(len(rows), bool), src
            hist, dt = self.history_, self.interval_
            gap = hist.times_at(rows, steps) - hist.times_at(rows, np.maximum(src, 0))
            m &= np.abs(gap - h * dt) <= self.step_tolerance * dt
        return m, src

    def _resolve(
        self,
        rows: np.ndarray,
        vals: np.ndarray,
        order: np.ndarray,
        sel: np.ndarray,
        resolved: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Members' errors on the forecasts that records ``sel`` resolve -> the combiner
        (causal); ``resolved`` is :meth:`_resolved` of every record, per horizon. One update
        for every horizon, in horizon order."""
        at, hs, src = [], [], []
        for j, (m, s) in enumerate(resolved):
            k = sel[m[sel]]
            if len(k):
                at.append(k)
                hs.append(np.full(len(k), j))
                src.append(s[k])
        if not at:
            return
        i, js = np.concatenate(at), np.concatenate(hs)
        r = rows[i]
        f = self.fc_[r, np.concatenate(src) % self.capacity, :, js]  # (n, M)
        self.combiner_.update(r, js, np.abs(f - vals[i, None]), f[:, EWMA], order[i])

    def _score(
        self,
        rows: np.ndarray,
        vals: np.ndarray,
        events: list[str],
        resolved: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Accuracy of resolved published forecasts (where every member had one), interval
        residuals of all of them, LSTM error to the drift detector (``resolved``: as in
        :meth:`_resolve`)."""
        cap = self.capacity
        for j, h in enumerate(self.horizons):
            m, src = resolved[j]
            r, s, y = rows[m], src[m] % cap, vals[m]
            pub = self.pub_[r, s, j]  # (n, 3)
            have = np.isfinite(pub[:, 0])
            if not have.any():
                continue
            r, s, y, pub = r[have], s[have], y[have], pub[have]
            self.quantiles_.add(h, np.log1p(y) - np.log1p(pub[:, 0]))
            f = self.fc_[r, s, :, j]
            every = np.isfinite(f).all(axis=1)
            if every.any():
                fe = f[every]
                self.accuracy_.update(
                    h, y[every], model=pub[every, 0], lower=pub[every, 1], upper=pub[every, 2],
                    defer=True,
                    **{name: fe[:, i] for i, name in enumerate(MEMBERS)},
                )  # fmt: skip
            lstm = np.isfinite(f[:, LSTM])
            if j == 0 and lstm.any():
                err = np.abs(np.log1p(y[lstm]) - np.log1p(f[lstm, LSTM]))
                if self.drift_.update(err):
                    events.append(f"drift detected after {self.records_} records")
                    self.drift_pending_ = True  # the retrain starts at the next boundary

    def training_set(self, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Windows and log targets available in the buffers (a random sample of ``limit``)."""
        hist, H = self.history_, max(self.horizons)
        rows, steps = hist.recent_pairs(self.window - 1, H + 1)
        pick = self._rng.permutation(len(rows))[:limit]  # a shuffled random sample
        rows, steps = rows[pick], steps[pick]
        x = hist.windows(rows, steps, self.window)
        y = np.stack(
            [hist.feats[rows, (steps + h) % self.capacity, 0] for h in self.horizons], axis=1
        )
        return x, y.astype(np.float64)

    def _maybe_warm_up(self, events: list[str]) -> None:
        """The LSTM's first fit, once ``warmup_windows`` windows exist. With ``background`` it
        runs beside the stream like a retrain (the baselines' ensemble is published until it
        is swapped in, version 1, at a later call): the loop never stalls in it."""
        trainer = self.trainer_
        if trainer.busy or trainer.pending or not trainer.slot_free:
            return  # running or done: swapped in by _swap
        hist, H = self.history_, max(self.horizons)
        avail = np.maximum(np.minimum(hist.count, self.capacity) - self.window - H, 0).sum()
        if avail < self.warmup_windows:
            return
        x, y = self.training_set(max(self.warmup_windows, self.retrain_windows))
        if self.background:
            if trainer.submit(x, y, epochs=self.warmup_epochs, reason="warm-up"):
                self.since_retrain_ = 0
                events.append(
                    f"warm-up fit started on {len(x)} windows in the background "
                    "(the baselines are published until it is done)"
                )
            return
        trainer.model.fit(x, y, epochs=self.warmup_epochs)
        self.model_.copy_from(trainer.model)
        self.version_ = 1
        self.since_retrain_ = 0
        events.append(f"warm-up fit on {len(x)} windows -> {self.model_version}")

    def _retrain(self, reason: str, events: list[str]) -> None:
        if self.trainer_.busy or not self.trainer_.slot_free:
            return
        self._swap(events)  # a retrain that finished since the batch began goes in first
        x, y = self.training_set(self.retrain_windows)
        if self.trainer_.submit(x, y, epochs=self.retrain_epochs, reason=reason):
            self.since_retrain_ = 0
            events.append(f"{reason} retrain started on {len(x)} windows")
            if not self.background:
                self._swap(events)

    def _swap(self, events: list[str]) -> None:
        result = self.trainer_.poll()
        if result is None:
            return
        if result.error:
            events.append(f"{result.reason} retrain failed: {result.error}")
            return
        if self.version_ == 0:  # the background warm-up fit: its scaler comes too
            self.model_.copy_from(self.trainer_.model)
        self.model_.set_weights(result.weights)
        self.version_ += 1
        info = {
            "version": self.version_,
            "reason": result.reason,
            "seconds": round(result.seconds, 3),
            "windows": result.n_windows,
            "at_record": self.records_,
        }
        self.retrains_.append(info)
        events.append(
            f"{result.reason} retrain done in {result.seconds:.2f}s -> {self.model_version}"
        )
