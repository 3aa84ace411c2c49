"""The online consensus-latency detector: node windows -> LSTM autoencoder score -> flag.

:meth:`ConsensusDetector.process` takes completed node samples
(:class:`~models.autoencoder.features.NodeSample`), turns each into a baseline-relative
feature row, appends it to the node's window, and scores every full window by its
reconstruction error. A window is flagged when its error reaches the adaptive threshold
(:class:`~models.autoencoder.threshold.AdaptiveThreshold`), or when the node's latency has
turned erratic (:class:`~models.autoencoder.volatility.NodeVolatility`), and only if it is a
rise; ``score >= 0.5`` is the flag. Flagged windows neither update the
threshold, nor the node's baseline, nor the training set of later retrains. The autoencoder is
first fitted once ``warmup_windows`` windows exist (a fleet too small to hold that many: once
every node's buffer is full), then retrained in the background every
``retrain_every`` samples (same :class:`~models.forecast.retrain.BackgroundTrainer` as the
forecaster), and swapped in between batches with a new version.

**Steps.** What is shared between nodes or feeds back into later samples changes only at step
boundaries, after every ``step_samples`` samples (counted over all calls): the threshold
learns the step's unflagged errors and is the one the next step's flags use, a node's latest
flag (which slows its baseline and volatility) takes effect, and the warm-up fit and
retrains (with ``background=False``) run. So the same samples in the same order give the same
scores however they are cut into batches (as the bandwidth forecaster, whose module says more).

Examples
--------
Before warm-up nothing is scored:

>>> from models.autoencoder.features import NodeSample
>>> d = ConsensusDetector(window=5, warmup_windows=10**9)
>>> out = d.process([NodeSample("n1", float(t), 5.0, 20.0, 1.0) for t in range(10)])
>>> len(out.index), d.version_
(0, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.autoencoder.features import FEATURES, NodeBaseline, NodeSample, log_net
from models.autoencoder.model import LSTMAutoencoder
from models.autoencoder.threshold import AdaptiveThreshold
from models.autoencoder.volatility import NodeVolatility
from models.forecast.retrain import BackgroundTrainer, RetrainsInBackground
from models.forecast.windows import LinkHistory, key_chunks, step_pieces


@dataclass
class ScoreBatch:
    """Scores of one :meth:`ConsensusDetector.process` call (``index`` into its samples).

    ``raw`` is the reconstruction error, ``score`` its squashed form in ``[0, 1)`` (0.5 = the
    threshold), ``deviation`` the sample's log consensus latency over the node baseline;
    ``versions``/``thresholds`` are the model version and threshold each row was scored with
    (a long batch is scored in chunks, see :meth:`ConsensusDetector.process`), and
    ``version``/``threshold`` the latest of them.
    """

    index: np.ndarray
    raw: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    deviation: np.ndarray
    threshold: float
    version: int
    events: list[str] = field(default_factory=list)
    versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    volatility: np.ndarray = field(default_factory=lambda: np.zeros(0))


class ConsensusDetector(RetrainsInBackground):
    """Online LSTM-autoencoder detector of consensus degradation (see the module docstring).

    Parameters
    ----------
    window, units, latent, seed
        Autoencoder shape and seed.
    feature_weights
        Error weight per feature (:data:`~models.autoencoder.features.FEATURES`). The RTT's is
        0: the model reads the fastest link's RTT as context, but its reconstruction error
        made a congested link a consensus incident (most false positives on mixed fleets).
    trim
        Largest per-step errors left out of a window's score (robust to one-sample spikes).
    warmup_windows, warmup_epochs
        Windows before the first fit, and its epochs. A fleet whose ring buffers (``capacity``
        samples per node) cannot hold that many windows is fitted once they are all full:
        before, a fleet of 16 nodes or fewer was never fitted and never alerted.
    retrain_every, retrain_windows, retrain_epochs
        Samples between retrains, windows per retrain, epochs per retrain.
    threshold_k
        Adaptive threshold: robust z-score of the log error (median + k MAD of recent
        unflagged errors).
    baseline_alpha
        Smoothing of the per-node baseline.
    capacity
        Samples kept per node.
    recent
        A window is flagged only if its last ``recent`` consensus values are, on average, above
        the node baseline (a rise, not a recovery).
    volatility_ratio, volatility_window, volatility_min_spread
        A window is also flagged (if it is a rise) once the node's recent sample-to-sample
        spread of log consensus latency, over ``volatility_window`` changes, reaches
        ``volatility_ratio`` times its normal one and ``volatility_min_spread`` itself
        (:class:`~models.autoencoder.volatility.NodeVolatility`): the erratic latency of a
        small degradation one window's error misses. ``volatility_ratio=0`` turns it off.
    background
        Retrain in the background, in a thread or in the executor given with :meth:`train_in`
        (``False``: inline, reproducible).
    step_samples
        Samples between two step boundaries (see the module docstring).
    retrain_pause_s
        Sleep after each training minibatch of a background retrain: a retrain takes longer
        but leaves the CPU to inference (ingestion) on a 2-core machine.
    batch_size
        Minibatch size of every fit.
    """

    volatility_: NodeVolatility | None = None  # a checkpoint from before it restores without
    volatility_ratio = 0.0
    # step state (class defaults: a checkpoint from before step boundaries restores with them)
    step_samples = 100
    seen_ = 0  # samples handed to process(), over all calls
    pending_: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # this step's
    # (rows, flags, unflagged errors), applied at the next boundary

    def __init__(
        self,
        window: int = 30,
        units: int = 16,
        latent: int = 4,
        feature_weights: Sequence[float] = (4.0, 0.0, 1.0),
        trim: int = 3,
        warmup_windows: int = 8000,
        warmup_epochs: int = 5,
        retrain_every: int = 20000,
        retrain_windows: int = 8192,
        retrain_epochs: int = 1,
        threshold_k: float = 4.0,
        baseline_alpha: float = 1 / 300,
        capacity: int = 512,
        recent: int = 5,
        volatility_ratio: float = 2.0,
        volatility_window: int = 12,
        volatility_min_spread: float = 0.05,
        background: bool = True,
        retrain_pause_s: float = 0.01,
        batch_size: int = 256,
        seed: int = 0,
        step_samples: int = 100,
    ) -> None:
        if step_samples < 1:
            raise ValueError(f"step_samples must be >= 1, got {step_samples}")
        self.step_samples = step_samples
        self.window, self.units, self.latent = window, units, latent
        self.feature_weights, self.trim = tuple(feature_weights), trim
        self.warmup_windows, self.warmup_epochs = warmup_windows, warmup_epochs
        self.retrain_every, self.retrain_windows = retrain_every, retrain_windows
        self.retrain_epochs, self.threshold_k = retrain_epochs, threshold_k
        self.baseline_alpha, self.capacity, self.recent = baseline_alpha, capacity, recent
        self.retrain_pause_s = retrain_pause_s
        self.volatility_ratio, self.volatility_window = volatility_ratio, volatility_window
        self.volatility_min_spread = volatility_min_spread
        self.volatility_ = (
            NodeVolatility(
                window=volatility_window, ratio=volatility_ratio, min_spread=volatility_min_spread
            )
            if volatility_ratio > 0
            else None
        )
        self.background, self.batch_size, self.seed = background, batch_size, seed
        self.history_ = LinkHistory(len(FEATURES), capacity)
        self.baseline_ = NodeBaseline(baseline_alpha)
        self.threshold_ = AdaptiveThreshold(threshold_k)
        self.model_ = self._new_model()
        self.trainer_ = BackgroundTrainer(
            self._new_model(), background=background, pause_s=retrain_pause_s
        )
        self.version_ = 0
        self.samples_ = 0
        self.since_retrain_ = 0
        self.retrains_: list[dict[str, Any]] = []
        self.flag_ = np.zeros((0, capacity), dtype=bool)  # flagged window ending at (row, step)
        self.node_flag_ = np.zeros(0, dtype=bool)  # the node's latest window was flagged
        self._rng = np.random.default_rng(seed)

    def _new_model(self) -> LSTMAutoencoder:
        return LSTMAutoencoder(
            window=self.window,
            n_features=len(FEATURES),
            units=self.units,
            latent=self.latent,
            weights=self.feature_weights,
            trim=self.trim,
            epochs=self.warmup_epochs,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    @property
    def ready(self) -> bool:
        """True once the autoencoder has been fitted."""
        return self.version_ > 0

    @property
    def model_version(self) -> str:
        """Version label written into alerts."""
        return f"consensus-ae-v{self.version_}"

    def process(self, samples: Sequence[NodeSample]) -> ScoreBatch:
        """Append node samples in order and score the full windows.

        A batch may hold any number of samples per node (a Kafka batch can be thousands of one
        partition's records): it is scored in consecutive chunks of at most ``capacity -
        window`` samples per node (:func:`~models.forecast.windows.key_chunks`), so that no
        node's later samples overwrite ring-buffer steps its earlier windows are read from.
        """
        events: list[str] = []
        self._swap(events)
        limit = self.capacity - self.window
        parts = []
        for lo, hi in step_pieces(len(samples), self.seen_, self.step_samples):
            for a, b in key_chunks([s.node for s in samples[lo:hi]], limit):
                parts.append((a + lo, self._process_chunk(samples[a + lo : b + lo], events)))
                self.seen_ += b - a
            if self.seen_ % self.step_samples == 0:
                self._boundary(events)
        parts = [(a, p) for a, p in parts if len(p.index)]
        if len(parts) == 1 and parts[0][0] == 0:
            out = parts[0][1]
            out.events = events
            return out
        thr = self.threshold_.value
        if not parts:
            empty = np.zeros(0)
            return ScoreBatch(
                np.zeros(0, np.int64),
                empty,
                empty,
                empty.astype(bool),
                empty,
                thr,
                self.version_,
                events,
            )
        cat = np.concatenate
        return ScoreBatch(
            index=cat([p.index + a for a, p in parts]),
            raw=cat([p.raw for _a, p in parts]),
            score=cat([p.score for _a, p in parts]),
            flagged=cat([p.flagged for _a, p in parts]),
            deviation=cat([p.deviation for _a, p in parts]),
            threshold=parts[-1][1].threshold,
            version=parts[-1][1].version,
            events=events,
            versions=cat([p.versions for _a, p in parts]),
            thresholds=cat([p.thresholds for _a, p in parts]),
            volatility=cat([p.volatility for _a, p in parts]),
        )

    def _process_chunk(self, samples: Sequence[NodeSample], events: list[str]) -> ScoreBatch:
        hist = self.history_
        keys = [s.node for s in samples]
        rows = hist.rows_for(keys)
        self._grow(len(hist.count))
        cons = np.array([s.cons for s in samples], dtype=float)
        rtt = np.array([s.rtt for s in samples], dtype=float)
        feats = self.baseline_.features(
            rows,
            cons,
            rtt,
            np.array([s.cpu for s in samples], dtype=float),
            frozen=self.node_flag_[rows],
        )
        ratios = None
        if self.volatility_ is not None:
            ratios = self.volatility_.update(rows, log_net(cons, rtt), self.node_flag_[rows])
        ts = np.array([s.ts for s in samples], dtype=float)
        rows, steps, ok = hist.append(keys, ts, feats, cons)
        self.samples_ += len(rows)
        self.since_retrain_ += len(rows)
        pos = steps % self.capacity
        self.flag_[rows, pos] = False
        full = steps >= self.window - 1
        empty = np.zeros(0)
        thr = self.threshold_.value
        if not (self.ready and full.any()):
            return ScoreBatch(
                np.zeros(0, np.int64),
                empty,
                empty,
                empty.astype(bool),
                empty,
                thr,
                self.version_,
                events,
            )
        r, s = rows[full], steps[full]
        win = hist.windows(r, s, self.window)
        raw = self.model_.score(win)
        # only a rise of the latency is a degradation: a window whose recent consensus level is
        # below the node baseline (recovery, a quiet node) is never flagged
        up = win[:, -self.recent :, 0].mean(axis=1) > 0.0
        flagged = (raw >= thr) & up
        vol = np.zeros(len(raw))
        if ratios is not None:
            vol = ratios[np.flatnonzero(ok)[full]]
            flagged |= (vol >= self.volatility_ratio) & up
        # squashed with the threshold the flags used (before it learns this batch), so that
        # score >= 0.5 is the flag; the threshold learns only the windows no rule flagged
        squashed = self.threshold_.squash(raw)
        self.flag_[r, s % self.capacity] = flagged
        # the threshold and the nodes' flags take this chunk in at the next step boundary
        pending = self.pending_ if self.pending_ is not None else []
        pending.append((r, flagged, raw[(raw < thr) & ~flagged]))
        self.pending_ = pending
        version = self.version_
        if self.volatility_ is not None:
            squashed = np.maximum(squashed, self.volatility_.score(vol))
        return ScoreBatch(
            index=np.flatnonzero(ok)[full],
            raw=raw,
            score=np.where(up, squashed, np.minimum(squashed, 0.45)),
            flagged=flagged,
            deviation=hist.feats[r, s % self.capacity, 0].astype(float),
            threshold=thr,
            version=version,
            events=events,
            versions=np.full(len(raw), version, np.int64),
            thresholds=np.full(len(raw), thr),
            volatility=vol,
        )

    # -- internals -----------------------------------------------------------------------------
    def _boundary(self, events: list[str]) -> None:
        """A step boundary: what the step's samples feed back (module docstring)."""
        for rows, flagged, normal in self.pending_ or []:
            self.threshold_.update(normal)
            self.node_flag_[rows] = flagged  # in order: a node's last window of the step wins
        self.pending_ = []
        if not self.ready:
            self._maybe_warm_up(events)
        elif self.since_retrain_ >= self.retrain_every:
            self._retrain(events)

    def _grow(self, n_rows: int) -> None:
        have = len(self.node_flag_)
        if n_rows > have:
            extra = n_rows - have
            self.flag_ = np.concatenate([self.flag_, np.zeros((extra, self.capacity), bool)])
            self.node_flag_ = np.concatenate([self.node_flag_, np.zeros(extra, bool)])

    def training_windows(self, limit: int) -> np.ndarray:
        """Recent windows with no flagged window ending inside them (a random sample)."""
        hist = self.history_
        rows, steps = hist.recent_pairs(self.window - 1, 0)
        pos = (steps[:, None] + np.arange(1 - self.window, 1)) % self.capacity
        clean = ~self.flag_[rows[:, None], pos].any(axis=1)
        rows, steps = rows[clean], steps[clean]
        if len(rows) > limit:
            pick = self._rng.choice(len(rows), size=limit, replace=False)
            rows, steps = rows[pick], steps[pick]
        return hist.windows(rows, steps, self.window)

    def _maybe_warm_up(self, events: list[str]) -> None:
        """The first fit, once ``warmup_windows`` windows exist. With ``background`` it runs
        beside the stream like a retrain: samples keep flowing in, unscored, until it is
        swapped in (version 1) at a later :meth:`process`; never a stall of the loop."""
        if self.trainer_.busy or self.trainer_.pending or not self.trainer_.slot_free:
            return  # the warm-up fit is running or done: swapped in by _swap
        count = self.history_.count
        per = np.maximum(np.minimum(count[count > 0], self.capacity) - self.window, 0)
        # a fleet of fewer than warmup_windows / (capacity - window) nodes (16 by default) can
        # never hold that many windows: it is fitted once every node's buffer is full
        full = len(per) * max(self.capacity - self.window, 0)
        if not len(per) or per.sum() < min(self.warmup_windows, full):
            return
        x = self.training_windows(max(self.warmup_windows, self.retrain_windows))
        if self.background:
            if self.trainer_.submit(x, None, epochs=self.warmup_epochs, reason="warm-up"):
                self.since_retrain_ = 0
                events.append(
                    f"warm-up fit started on {len(x)} windows in the background "
                    "(samples pass unscored until it is done)"
                )
            return
        self.trainer_.model.fit(x, epochs=self.warmup_epochs)
        self.model_.copy_from(self.trainer_.model)
        self.version_ = 1
        self.since_retrain_ = 0
        events.append(f"warm-up fit on {len(x)} windows -> {self.model_version}")

    def _retrain(self, events: list[str]) -> None:
        if self.trainer_.busy or not self.trainer_.slot_free:
            return
        self._swap(events)
        x = self.training_windows(self.retrain_windows)
        if self.trainer_.submit(x, None, epochs=self.retrain_epochs, reason="scheduled"):
            self.since_retrain_ = 0
            events.append(f"retrain started on {len(x)} windows")
            if not self.background:
                self._swap(events)

    def _swap(self, events: list[str]) -> None:
        result = self.trainer_.poll()
        if result is None:
            return
        if result.error:
            events.append(f"{result.reason} fit failed: {result.error}")
            return
        if self.version_ == 0:  # the background warm-up fit: its scaler comes too
            self.model_.copy_from(self.trainer_.model)
        self.model_.set_weights(result.weights)
        self.version_ += 1
        self.retrains_.append(
            {
                "version": self.version_,
                "reason": result.reason,
                "seconds": round(result.seconds, 3),
                "windows": result.n_windows,
            }
        )
        events.append(f"{result.reason} fit done in {result.seconds:.2f}s -> {self.model_version}")
