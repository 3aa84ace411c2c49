"""Opening recordings: plain or gzip-compressed (by the ``.gz`` suffix), for every reader.

Examples
--------
>>> import gzip, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "r.jsonl.gz")
>>> with gzip.open(path, "wb") as f:
...     _ = f.write(b'{"a": 1}\\n')
>>> with open_recording(path) as f:
...     f.read()
b'{"a": 1}\\n'
"""

from __future__ import annotations

import gzip
import os
from typing import IO, cast


def open_recording(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for binary reading, decompressing it when its name ends in ``.gz``."""
    if os.fspath(path).endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115 - the caller closes it
