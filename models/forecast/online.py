"""The online bandwidth forecaster: windows per link, LSTM forecasts with intervals, online
scoring against persistence and EWMA, drift-triggered and scheduled micro-batch retrains.

One call of :meth:`OnlineForecaster.process` handles a batch of link records in arrival order:

1. swap in a finished background retrain (new weights, ``version + 1``); the batch is then
   cut into consecutive chunks with at most ``capacity - window - max(horizons)`` records of
   any link (:func:`~models.forecast.windows.key_chunks`), and each chunk goes through 2-5;
   a Kafka batch can hold thousands of one partition's records of a few links, and without
   the cut a link's later records would overwrite its ring-buffer steps before the earlier
   records' windows are read;
2. append each record to its link's ring buffer (duplicates by event time are skipped);
3. forecast every horizon for every record whose link has a full window;
4. score the forecasts made ``h`` steps earlier that these records resolve (MAE, MAPE and
   interval coverage, beside persistence and EWMA forecasts made at the same time), feed the
   residuals to the interval quantiles and the error to the drift detector;
5. once enough windows exist, fit the model on them (warm-up, synchronous); afterwards start
   a background retrain every ``retrain_every`` records or when drift is detected.

Pure code: no Kafka, no files, no clock other than timing a retrain.

Examples
--------
The untrained forecaster still tracks its baselines (the LSTM starts after warm-up):

>>> import numpy as np
>>> f = OnlineForecaster(window=4, horizons=(1,), warmup_windows=10**9)
>>> ts = np.arange(20.0)
>>> out = f.process(["a"] * 20, ts, 100 + ts, np.ones(20), np.ones(20), np.zeros(20))
>>> len(out.index), f.version_, f.records_
(0, 0, 20)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.forecast.accuracy import AccuracyTracker
from models.forecast.baselines import EWMABaseline
from models.forecast.drift import DriftTrigger
from models.forecast.intervals import ResidualQuantiles
from models.forecast.lstm import LSTMForecaster
from models.forecast.retrain import BackgroundTrainer, RetrainsInBackground
from models.forecast.windows import FEATURES, LinkHistory, key_chunks, step_features

log = logging.getLogger(__name__)


@dataclass
class ForecastBatch:
    """Forecasts of one :meth:`OnlineForecaster.process` call.

    ``index`` are positions in the input records; ``value``/``lower``/``upper`` are
    ``(len(index), len(horizons))`` in the target's unit; ``versions`` is the model version of
    each row (a warm-up or a synchronous retrain can fall inside a long batch) and ``version``
    the latest of them.
    """

    index: np.ndarray
    keys: list[Hashable]
    value: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    version: int
    events: list[str] = field(default_factory=list)
    versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


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
    coverage, residual_size
        Nominal interval coverage and the rolling residual buffer per horizon.
    ewma_alpha
        Smoothing of the EWMA baseline.
    drift_delta, drift_chunk
        ADWIN confidence and errors averaged per ADWIN update.
    background
        Retrain in a background thread (``False``: synchronously, for reproducible runs).
    retrain_pause_s
        Sleep after each training minibatch of a background retrain: a retrain takes longer
        but leaves the CPU to inference (ingestion) on a 2-core machine.
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
        ewma_alpha: float = 0.3,
        drift_delta: float = 0.002,
        drift_chunk: int = 200,
        background: bool = True,
        retrain_pause_s: float = 0.01,
        learning_rate: float = 3e-3,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.window, self.horizons, self.units = window, tuple(horizons), units
        self.batch_size = batch_size
        self.capacity, self.warmup_windows, self.warmup_epochs = (
            capacity,
            warmup_windows,
            warmup_epochs,
        )
        self.retrain_every, self.retrain_windows = retrain_every, retrain_windows
        self.retrain_epochs, self.coverage, self.residual_size = (
            retrain_epochs,
            coverage,
            residual_size,
        )
        self.ewma_alpha, self.drift_delta, self.drift_chunk = ewma_alpha, drift_delta, drift_chunk
        self.retrain_pause_s = retrain_pause_s
        self.background, self.learning_rate, self.seed = background, learning_rate, seed
        if capacity < window + max(self.horizons) + 64:
            raise ValueError(f"capacity {capacity} too small for window {window} + horizons")
        H = len(self.horizons)
        self.history_ = LinkHistory(len(FEATURES), capacity)
        self.ewma_ = EWMABaseline(ewma_alpha)
        self.accuracy_ = AccuracyTracker(self.horizons)
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
        shape = (0, capacity, H)
        self.pred_ = np.full(shape, np.nan)  # log-scale forecast made at (row, step)
        self.base_ = np.zeros((0, capacity, 2))  # persistence, ewma at (row, step)

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
        """Version label written into predictions."""
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
    ) -> ForecastBatch:
        """Handle a batch of link records (arrays aligned with ``keys``, ``ts`` in epoch s).

        The batch may hold any number of records per link (a Kafka batch can be thousands of
        one partition's records): it is handled in consecutive chunks that each fit the ring
        buffers (:func:`~models.forecast.windows.key_chunks`), so the forecasts do not depend
        on how the links' records were interleaved or cut into batches.
        """
        events: list[str] = []
        self._swap(events)
        ts, tp, rtt, jitter, loss = (
            np.asarray(x, dtype=float) for x in (ts, throughput, rtt, jitter, loss)
        )
        limit = self.capacity - self.window - max(self.horizons)
        index, value, lower, upper, versions = [], [], [], [], []
        out_keys: list[Hashable] = []
        for a, b in key_chunks(keys, limit):
            i, k, v, lo, hi, ver = self._process_chunk(
                keys[a:b], ts[a:b], tp[a:b], rtt[a:b], jitter[a:b], loss[a:b], events
            )
            index.append(i + a)
            out_keys += k
            value.append(v)
            lower.append(lo)
            upper.append(hi)
            versions.append(np.full(len(i), ver, np.int64))
        if not out_keys:
            empty = np.zeros((0, len(self.horizons)))
            none = np.zeros(0, np.int64)
            return ForecastBatch(none, [], empty, empty, empty, self.version_, events)
        vers = np.concatenate(versions)
        return ForecastBatch(
            index=np.concatenate(index),
            keys=out_keys,
            value=np.concatenate(value),
            lower=np.concatenate(lower),
            upper=np.concatenate(upper),
            version=int(vers[-1]),
            events=events,
            versions=vers,
        )

    def _process_chunk(
        self,
        keys: Sequence[Hashable],
        ts: np.ndarray,
        throughput: np.ndarray,
        rtt: np.ndarray,
        jitter: np.ndarray,
        loss: np.ndarray,
        events: list[str],
    ) -> tuple[np.ndarray, list[Hashable], np.ndarray, np.ndarray, np.ndarray, int]:
        """Steps 2-5 of the module docstring for records that fit the ring buffers."""
        ts = np.asarray(ts, dtype=float)
        throughput = np.maximum(np.nan_to_num(np.asarray(throughput, dtype=float)), 0.0)
        feats = step_features(ts, throughput, rtt, jitter, loss)
        hist = self.history_
        rows, steps, ok = hist.append(keys, ts, feats, throughput)
        self._grow(len(hist.count))
        self.records_ += len(rows)
        self.since_retrain_ += len(rows)
        if self.interval_ is None:
            self._estimate_interval(rows, steps)
        pos = steps % self.capacity
        vals = throughput[ok]
        self.base_[rows, pos, 0] = vals
        self.base_[rows, pos, 1] = self.ewma_.update(rows, vals)
        self.pred_[rows, pos] = np.nan

        full = steps >= self.window - 1
        index = np.flatnonzero(ok)[full]
        value = lower = upper = np.zeros((0, len(self.horizons)))
        version = self.version_
        if not self.ready:
            self._maybe_warm_up(events)
        if self.ready and full.any():
            r, s = rows[full], steps[full]
            logf = self.model_.predict(hist.windows(r, s, self.window))
            version = self.version_
            self.pred_[r, s % self.capacity] = logf
            q = np.array([self.quantiles_.bounds(h) for h in self.horizons])  # (H, 2)
            value = np.maximum(np.expm1(logf), 0.0)
            lower = np.maximum(np.expm1(logf + q[:, 0]), 0.0)
            upper = np.maximum(np.expm1(logf + q[:, 1]), 0.0)
        else:
            index = index[:0]
        # score after forecasting: a record can resolve a forecast made earlier in this batch
        self._score(rows, steps, vals, events)
        if self.ready and self.since_retrain_ >= self.retrain_every:
            self._retrain("scheduled", events)
        keys_out = [hist.keys[r] for r in rows[full]] if len(index) else []
        return index, keys_out, value, lower, upper, version

    # -- internals ---------------------------------------------------------------------------
    def _grow(self, n_rows: int) -> None:
        have = len(self.pred_)
        if n_rows > have:
            extra = n_rows - have
            self.pred_ = np.concatenate(
                [self.pred_, np.full((extra, self.capacity, len(self.horizons)), np.nan)]
            )
            self.base_ = np.concatenate([self.base_, np.zeros((extra, self.capacity, 2))])

    def _estimate_interval(self, rows: np.ndarray, steps: np.ndarray) -> None:
        hist = self.history_
        m = steps >= 1
        if m.sum() < 3:
            return
        gaps = hist.times_at(rows[m], steps[m]) - hist.times_at(rows[m], steps[m] - 1)
        gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
        if len(gaps):
            self.interval_ = float(np.median(gaps))

    def _score(
        self, rows: np.ndarray, steps: np.ndarray, vals: np.ndarray, events: list[str]
    ) -> None:
        if not self.ready or self.interval_ is None:
            return
        hist, cap, dt = self.history_, self.capacity, self.interval_
        t_now = hist.times_at(rows, steps)
        for j, h in enumerate(self.horizons):
            src = steps - h
            m = src >= 0
            r, s, y = rows[m], src[m], vals[m]
            p = self.pred_[r, s % cap, j]
            gap = t_now[m] - hist.times_at(r, s)
            m2 = np.isfinite(p) & (np.abs(gap - h * dt) <= 0.5 * dt)
            if not m2.any():
                continue
            r, s, y, p = r[m2], s[m2], y[m2], p[m2]
            resid = np.log1p(y) - p
            q_lo, q_hi = self.quantiles_.bounds(h)
            base = self.base_[r, s % cap]
            self.accuracy_.update(
                h,
                y,
                model=np.maximum(np.expm1(p), 0.0),
                persistence=base[:, 0],
                ewma=base[:, 1],
                lower=np.maximum(np.expm1(p + q_lo), 0.0),
                upper=np.maximum(np.expm1(p + q_hi), 0.0),
            )
            self.quantiles_.add(h, resid)
            if j == 0 and self.drift_.update(np.abs(resid)):
                events.append(f"drift detected after {self.records_} records")
                self._retrain("drift", events)

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
        hist, H = self.history_, max(self.horizons)
        avail = np.maximum(np.minimum(hist.count, self.capacity) - self.window - H, 0).sum()
        if avail < self.warmup_windows:
            return
        x, y = self.training_set(max(self.warmup_windows, self.retrain_windows))
        cut = int(0.85 * len(x))  # the windows come shuffled; the last 15% calibrate intervals
        trainer = self.trainer_
        trainer.model.fit(x[:cut], y[:cut], epochs=self.warmup_epochs)
        self.model_.copy_from(trainer.model)
        self._seed_quantiles(x[cut:], y[cut:])
        self.version_ = 1
        self.since_retrain_ = 0
        events.append(f"warm-up fit on {len(x)} windows -> {self.model_version}")

    def _seed_quantiles(self, x: np.ndarray, y: np.ndarray) -> None:
        n = min(len(x), self.residual_size)
        resid = y[:n] - self.model_.predict(x[:n])
        for j, h in enumerate(self.horizons):
            self.quantiles_.add(h, resid[:, j])

    def _retrain(self, reason: str, events: list[str]) -> None:
        if self.trainer_.busy:
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
