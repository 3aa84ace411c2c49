"""Graceful shutdown on SIGINT/SIGTERM for the consume loops.

The first signal only *asks* the loop to stop: it finishes the batch in hand, flushes, commits
and closes. A second signal raises ``KeyboardInterrupt`` at once (nothing is committed that
was not flushed, so the worst case is re-reading the last batch).

Examples
--------
>>> import threading
>>> stop = threading.Event()
>>> with handle_signals(stop.set):
...     pass  # run the loop here; SIGINT/SIGTERM call stop.set()
>>> stop.is_set()
False
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def handle_signals(request_stop: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``request_stop`` while the block runs.

    The previous handlers are restored on exit. Outside the main thread (where Python cannot
    install signal handlers, e.g. a loop run by a test in a thread) this does nothing.

    Parameters
    ----------
    request_stop
        Called (from the signal handler, so it must be quick and thread-safe, e.g.
        ``threading.Event.set``) on the first signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping now")
        log.warning(
            "%s received: finishing the current batch, then stopping "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )
        request_stop()

    previous: dict[int, Any] = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
