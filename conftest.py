"""Process-level hooks for the whole pytest run (``tests/conftest.py`` keeps the broker fixtures).

The suite's process holds native libraries with threads of their own (librdkafka, TensorFlow).
Once every result is reported, letting the interpreter finalize them can crash it (a
segmentation fault after "N passed", seen once in a fresh-clone run): callbacks into a
finalizing interpreter, a known confluent-kafka failure mode. So the run ends with
``os._exit`` and pytest's own exit status, after every other plugin's ``unconfigure``.
Consumers started by the tests are separate processes, unaffected: their exit codes are
asserted where they matter. ``DWCP_PYTEST_FINALIZE=1`` keeps the normal interpreter exit.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is None or os.environ.get("DWCP_PYTEST_FINALIZE") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
