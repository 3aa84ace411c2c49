"""Python's cyclic garbage collector, set for a long-running stream processor.

A processor holds a large, long-lived heap (trees, forests, per-link baselines, networks) and
allocates many short-lived objects per record (decoded records, feature rows, outputs), none of
which form reference cycles that need the collector. With CPython's default thresholds
(700, 10, 10) the collector runs a young collection every 700 allocations and, every hundred of
those, walks the whole old heap: on the four-model pipeline that was about a fifth of its time
(1.26x faster without it, ``python bench/bench_processing.py``).

:func:`tuned` wraps the loop: it starts when the state is restored, before the first record,
and ends when the loop stops:

* **freeze** what exists then (the restored models and imported modules) into the permanent
  generation (:func:`gc.freeze`), so no collection walks it again. Frozen objects are still
  freed by reference counting; only a reference *cycle* among them that becomes garbage while
  the loop runs (e.g. the restored network once a retrain replaces it) waits until the loop
  stops: a one-time cost bounded by the start-up state, not a growing leak;
* **young-generation threshold** ``gen0`` allocations (``DWCP_GC_THRESHOLD``, default
  50,000) instead of 700, older generations collected every 50th and 100th time: cycles made
  while running are still collected, less often.

When the loop stops the objects are unfrozen and the thresholds put back, so a process that
runs the shell more than once (tests, benchmarks) keeps nothing frozen. ``gen0=0`` leaves the
interpreter's collector as it is.

>>> import gc
>>> before = gc.get_threshold()
>>> with tuned(20_000) as thresholds:
...     thresholds == gc.get_threshold() == (20_000, 50, 100) and gc.get_freeze_count() > 0
True
>>> gc.get_threshold() == before, gc.get_freeze_count()
(True, 0)
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["tuned"]


@contextmanager
def tuned(gen0: int) -> Iterator[tuple[int, int, int] | None]:
    """Freeze the objects alive now and raise the collector's thresholds for the ``with``
    block; yields the thresholds in force (``None`` when ``gen0`` is 0: nothing changed)."""
    if gen0 <= 0:
        yield None
        return
    before = gc.get_threshold()
    gc.collect()  # what is garbage already is not frozen
    gc.freeze()
    gc.set_threshold(gen0, 50, 100)
    try:
        yield gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
