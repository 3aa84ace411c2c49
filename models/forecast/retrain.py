"""Micro-batch retraining in one background thread, with an atomic swap done by the caller.

:class:`BackgroundTrainer` owns a *training copy* of the model. :meth:`submit` hands it a
training set and starts one thread that continues training it (warm start); inference keeps
using the caller's model meanwhile. When the thread is done, :meth:`poll` returns the new
weights once, and the caller copies them into its inference model between two batches, so
every forecast of a batch comes from one model version. At most one retrain runs at a time.

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

import threading
import time
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


class BackgroundTrainer:
    """Runs ``model.fit(x, y, epochs=...)`` in a background thread (one at a time).

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
        self.model, self.background, self.pause_s = model, background, pause_s
        self._thread: threading.Thread | None = None
        self._result: RetrainResult | None = None
        self._lock = threading.Lock()
        self.completed = 0

    def run_where(self, background: bool, pause_s: float) -> None:
        """Where the next retrains run (between retrains: a restored model follows the run's
        flags, not those of the run that saved it)."""
        self.background, self.pause_s = background, pause_s

    @property
    def busy(self) -> bool:
        """True while a retrain runs."""
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
        self._thread = threading.Thread(
            target=self._run_in_slot, args=(x, y, epochs, reason, n), name="lstm-retrain",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        return True

    def _run(self, x: Any, y: Any, epochs: int, reason: str, n: int) -> None:
        t0 = time.perf_counter()
        try:
            if self.background and self.pause_s > 0:
                self.model.fit(x, y, epochs=epochs, pause_s=self.pause_s)
            else:
                self.model.fit(x, y, epochs=epochs)
            result = RetrainResult(self.model.get_weights(), reason, time.perf_counter() - t0, n)
        except Exception as exc:  # a failed retrain keeps the current model serving
            result = RetrainResult([], reason, time.perf_counter() - t0, n, error=repr(exc))
        with self._lock:
            self._result = result
            self.completed += 1

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
        if self._thread is not None:
            self._thread.join(timeout)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "background": self.background,
            "pause_s": self.pause_s,
            "completed": self.completed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], state["background"], state.get("pause_s", 0.0))  # type: ignore[misc]
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
