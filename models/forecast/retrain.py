"""Micro-batch retraining beside the stream, with an atomic swap done by the caller.

:class:`BackgroundTrainer` owns a *training copy* of the model. :meth:`submit` hands it a
training set and starts one retrain that continues training it (warm start); inference keeps
using the caller's model meanwhile. When the retrain is done, :meth:`poll` returns the new
weights once, and the caller copies them into its inference model between two batches, so
every forecast of a batch comes from one model version. At most one retrain runs at a time.

A retrain runs in a thread of this process, or, given an executor (:meth:`~BackgroundTrainer.
set_executor`, e.g. a one-worker process pool), in that executor: the training copy travels
pickled (weights, optimizer moments, training-order generator: the same continuation as in a
thread) and comes back pickled. Keras' training loop is Python; in a thread it holds this
process's interpreter lock for much of a fit (tracing the training step, every minibatch's
callbacks), and the stream loop waits. In a worker process it only shares the CPU.

Examples
--------
>>> class Echo:                          # any object with fit() and get_weights()
...     def fit(self, x, y, epochs=None):
...         self.w = [sum(x)]
...     def get_weights(self):
...         return self.w
>>> bt = BackgroundTrainer(Echo())
>>> bt.submit([1, 2, 3], None, epochs=1, reason="scheduled")
True
>>> bt.join()
>>> result = bt.poll()
>>> result.weights, result.reason, bt.poll() is None
([6], 'scheduled', True)
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetrainResult:
    """The outcome of one retrain: new weights, why it ran, how long it took, on how much."""

    weights: list[Any]
    reason: str
    seconds: float
    n_windows: int
    error: str = ""


#: One background fit at a time in a process: on two cores, the bandwidth forecaster's and the
#: consensus detector's fits at once left the stream loop too little CPU
_FIT_SLOT = threading.Lock()


log = logging.getLogger(__name__)

#: Training copies a worker process keeps live between retrains: ``trainer id -> (generation,
#: model)``. A retrain whose copy is the one the worker returned last (same generation) continues
#: that object instead of unpickling it again (rebuilding the network and retracing its training
#: step each time); the pickle round trip is exact, so both give the same weights.
_WORKER_MODELS: dict[str, tuple[int, Any]] = {}
_WORKER_KEEP = 4


def _fit(model: Any, x: Any, y: Any, epochs: int, pause_s: float) -> None:
    """``model.fit``, sleeping ``pause_s`` per minibatch when it is above 0 (a model without
    the ``pause_s`` argument is fitted without one)."""
    if pause_s > 0:
        model.fit(x, y, epochs=epochs, pause_s=pause_s)
    else:
        model.fit(x, y, epochs=epochs)


def fit_in_worker(
    key: str,
    generation: int,
    blob: bytes,
    x: Any,
    y: Any,
    epochs: int,
    pause_s: float,
    threads: tuple[int, int],
) -> tuple[int, bytes, list[Any]]:
    """One retrain in a worker process: continue the training copy pickled in ``blob`` (or the
    live copy of the same ``generation`` kept from this trainer's last retrain) on ``(x, y)``.
    Returns the next generation, the trained copy pickled, and its weights. Module-level, so a
    process pool can run it."""
    from models.forecast import tfrt

    tfrt.configure_threads(*threads)  # before this worker's first TensorFlow import
    kept = _WORKER_MODELS.pop(key, None)
    model = kept[1] if kept is not None and kept[0] == generation else pickle.loads(blob)
    _fit(model, x, y, epochs, pause_s)
    _WORKER_MODELS[key] = (generation + 1, model)
    while len(_WORKER_MODELS) > _WORKER_KEEP:  # trainers this worker no longer hears from
        _WORKER_MODELS.pop(next(iter(_WORKER_MODELS)))
    return generation + 1, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), model.get_weights()


def prepare_worker(threads: tuple[int, int]) -> None:
    """Import TensorFlow in a worker process ahead of its first retrain (seconds of CPU that
    would otherwise delay that retrain). Module-level, so a process pool can run it."""
    from models.forecast import tfrt

    tfrt.configure_threads(*threads)
    tfrt.keras()


class BackgroundTrainer:
    """Runs ``model.fit(x, y, epochs=...)`` beside the stream (one at a time): in a thread, or
    in an executor given with :meth:`set_executor`.

    Parameters
    ----------
    model
        The training copy; only the trainer thread touches it while a retrain runs.
    background
        ``False`` trains synchronously inside :meth:`submit` (deterministic tests, replays).
    pause_s
        Sleep after each training minibatch of a background retrain (passed to ``fit``), so
        that a retrain takes longer but leaves the CPU to inference on a 2-core machine.
    """

    def __init__(self, model: Any, background: bool = True, pause_s: float = 0.0) -> None:
        self._model: Any = model
        self._blob: bytes | None = None  # the training copy as a worker returned it, pickled
        self.background, self.pause_s = background, pause_s
        self._thread: threading.Thread | None = None
        self._future: Future[Any] | None = None
        self._done = threading.Event()
        self._result: RetrainResult | None = None
        self._lock = threading.Lock()
        self.executor: Executor | None = None
        self._key = uuid.uuid4().hex
        self._generation = 0
        self.completed = 0

    @property
    def model(self) -> Any:
        """The training copy (unpickled here on first use after a retrain in a worker)."""
        if self._blob is not None:
            self._model, self._blob = pickle.loads(self._blob), None
            self._key = uuid.uuid4().hex  # the worker's live copy is no longer the one to go on
        return self._model

    def set_executor(self, executor: Executor | None) -> None:
        """Run later background retrains in ``executor`` (``None``: a thread of this process)."""
        self.executor = executor

    def run_where(self, background: bool, pause_s: float) -> None:
        """Where the next retrains run (between retrains: a restored model follows the run's
        flags, not those of the run that saved it)."""
        self.background, self.pause_s = background, pause_s

    @property
    def busy(self) -> bool:
        """True while a retrain runs."""
        if self._future is not None and not self._done.is_set():
            return True
        return self._thread is not None and self._thread.is_alive()

    @property
    def slot_free(self) -> bool:
        """False while a background retrain would have to wait for another trainer of this
        process (ask before building a training set: :meth:`submit` would refuse it)."""
        return not self.background or not _FIT_SLOT.locked()

    @property
    def pending(self) -> bool:
        """True when a finished retrain's result has not been polled yet."""
        with self._lock:
            return self._result is not None

    def submit(self, x: Any, y: Any, *, epochs: int, reason: str) -> bool:
        """Start a retrain on ``(x, y)``; False (and nothing done) while one is running or its
        result has not been polled yet (so no finished model version is ever overwritten)."""
        with self._lock:
            unpolled = self._result is not None
        if self.busy or unpolled:
            return False
        n = len(x)
        if not self.background:
            self._run(x, y, epochs, reason, n)
            return True
        if not _FIT_SLOT.acquire(blocking=False):
            return False  # another trainer of this process is fitting: try again later
        if self.executor is not None and self._submit_elsewhere(x, y, epochs, reason, n):
            return True
        self._thread = threading.Thread(
            target=self._run_in_slot, args=(x, y, epochs, reason, n), name="lstm-retrain",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        return True

    def _run(self, x: Any, y: Any, epochs: int, reason: str, n: int) -> None:
        t0 = time.perf_counter()
        try:
            _fit(self.model, x, y, epochs, self.pause_s if self.background else 0.0)
            result = RetrainResult(self.model.get_weights(), reason, time.perf_counter() - t0, n)
        except Exception as exc:  # a failed retrain keeps the current model serving
            result = RetrainResult([], reason, time.perf_counter() - t0, n, error=repr(exc))
        with self._lock:
            self._result = result
            self.completed += 1

    def _submit_elsewhere(self, x: Any, y: Any, epochs: int, reason: str, n: int) -> bool:
        """Start the retrain in the executor (the fit slot is held); False if it refused."""
        from models.forecast import tfrt

        t0 = time.perf_counter()
        assert self.executor is not None
        try:
            blob = self._blob
            if blob is None:
                blob = pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL)
            future = self.executor.submit(
                fit_in_worker, self._key, self._generation, blob, x, y, epochs,
                self.pause_s, tfrt.threads(),
            )  # fmt: skip
        except Exception as exc:  # shut down, broken, or a copy that cannot travel
            log.warning("the training worker refused a %s retrain (%r): retrains run in a "
                        "thread of this process from now on", reason, exc)  # fmt: skip
            self.executor = None
            return False
        self._done.clear()
        self._future = future
        future.add_done_callback(lambda f: self._collect(f, reason, n, t0))
        return True

    def _collect(self, future: Future[Any], reason: str, n: int, t0: float) -> None:
        """The executor's retrain is over (its own thread calls this): keep its result."""
        try:
            generation, blob, weights = future.result()
            result = RetrainResult(weights, reason, time.perf_counter() - t0, n)
            with self._lock:
                self._generation, self._blob = generation, blob
        except BaseException as exc:  # a failed retrain keeps the current model serving
            result = RetrainResult([], reason, time.perf_counter() - t0, n, error=repr(exc))
            if isinstance(exc, BrokenProcessPool):
                self.executor = None  # the worker died: later retrains run in a thread
        with self._lock:
            self._result = result
            self.completed += 1
        _FIT_SLOT.release()
        self._done.set()

    def _run_in_slot(self, x: Any, y: Any, epochs: int, reason: str, n: int) -> None:
        try:
            self._run(x, y, epochs, reason, n)
        finally:
            _FIT_SLOT.release()

    def poll(self) -> RetrainResult | None:
        """The finished retrain's result, once; ``None`` while running or idle."""
        with self._lock:
            result, self._result = self._result, None
        return result

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running retrain."""
        if self._future is not None:
            self._done.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def __getstate__(self) -> dict[str, Any]:
        # a copy a worker returned stays pickled: no network is rebuilt here for a checkpoint
        blob = self._blob
        return {
            "model": self._model if blob is None else None,
            "model_pickled": blob,
            "background": self.background,
            "pause_s": self.pause_s,
            "completed": self.completed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], state["background"], state.get("pause_s", 0.0))  # type: ignore[misc]
        self._blob = state.get("model_pickled")
        self.completed = state["completed"]


class RetrainsInBackground:
    """Mixin for an online model that serves ``model_`` while ``trainer_`` retrains a copy.

    The host class provides ``model_``, ``trainer_``, ``background``, ``retrain_pause_s``,
    ``_new_model()`` (an untrained model of the same shape) and ``_swap(events)`` (swap a
    finished retrain in). The mixin gives it :meth:`finish`, :meth:`fit_where` and pickling.
    An idle trainer is pickled with its model (its optimizer moments and training-order
    generator), so a retrain after a restore is the retrain that would have run without it. A trainer that is
    mid-retrain in its thread, or holds a result not swapped in yet, is not: the restored
    object gets a fresh trainer holding a copy of the serving model (that retrain is lost;
    :meth:`finish` before the checkpoint keeps it, as the consumers do on shutdown).
    """

    model_: Any
    trainer_: Any
    background: bool
    retrain_pause_s: float

    def _new_model(self) -> Any:
        raise TypeError(f"{type(self).__name__} must define _new_model()")

    def _swap(self, events: list[str]) -> None:
        raise TypeError(f"{type(self).__name__} must define _swap()")

    def train_in(self, executor: Executor | None) -> None:
        """Run background retrains in ``executor`` (e.g. a one-worker process pool; ``None``:
        a thread of this process). Not pickled: set again after a restore."""
        self.trainer_.set_executor(executor)

    def warm_inference(self) -> None:
        """Start compiling the serving model's inference shapes (a model restored from a
        checkpoint; :class:`~models.forecast.tfrt.Inference`) beside whatever comes next, e.g.
        joining the consumer group, instead of at its first batches. Nothing to do before the
        first fit."""
        self.model_.warm_inference()

    def fit_where(self, background: bool, pause_s: float) -> None:
        """Run the first fit and later retrains in the background (or inline), pausing
        ``pause_s`` per minibatch: set after a restore, so a checkpoint saved by an inline-fit
        run (a file) does not make a live run fit inline, nor the other way round."""
        self.background, self.retrain_pause_s = background, pause_s
        self.trainer_.run_where(background, pause_s)

    def finish(self, timeout: float | None = None) -> None:
        """Wait for a running retrain and swap it in (call before a checkpoint)."""
        self.trainer_.join(timeout)
        self._swap([])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        trainer = self.trainer_
        if trainer.busy or trainer.pending:
            state["trainer_"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.trainer_ is not None:
            return
        self.trainer_ = BackgroundTrainer(
            self._new_model(), background=self.background, pause_s=self.retrain_pause_s
        )
        if self.model_.net_ is not None:
            self.trainer_.model.copy_from(self.model_)
