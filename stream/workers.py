"""Worker processes that die with the process that started them.

A ``ProcessPoolExecutor`` worker blocks on its call queue, and after a ``kill -9`` of its parent
nothing ever closes that queue, so the worker (and a forkserver between them) would live on.
:func:`pool` builds a pool from a ``spawn`` context (a clean interpreter: no Kafka client or
threads inherited; the parent is the process that made the pool) whose workers run
:func:`_watch_parent`: a daemon thread that ends the worker within a second of its parent's
death, however the parent died. The resource tracker that ``multiprocessing`` starts exits by
itself once every process holding its pipe is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["pool"]


def _watch_parent(parent: int, nice: int) -> None:
    if nice:
        os.nice(nice)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)  # the parent is gone: nothing will ever read this worker's results

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def pool(max_workers: int = 1, nice: int = 0) -> ProcessPoolExecutor:
    """A process pool whose workers run at ``nice`` and die with this process."""
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=mp.get_context("spawn"),
        initializer=_watch_parent,
        initargs=(os.getpid(), nice),
    )
