"""Versioned, atomic checkpoints of consumer state (models, scalers, trackers).

A checkpoint is one pickled object plus a small JSON metadata file, written to a temporary
file and renamed into place, so a crash mid-write never leaves a torn checkpoint: restore
always finds the last complete one. The newest ``keep`` versions are kept.

Examples
--------
>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp(), "demo")
>>> store.load() is None
True
>>> store.save({"weights": [1, 2, 3]}, meta={"records_seen": 10})
1
>>> store.save({"weights": [4, 5, 6]}, meta={"records_seen": 20})
2
>>> state, meta = store.load()
>>> state["weights"], meta["records_seen"], meta["version"]
([4, 5, 6], 20, 2)
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson

from stream.errors import CheckpointError

_NAME = re.compile(r"^ckpt-(\d{8})\.pkl$")


class CheckpointStore:
    """Checkpoints of one named state under ``root/name/``.

    Parameters
    ----------
    root
        Folder for all checkpoints (``Settings.state_dir``).
    name
        One folder per consumer/model, e.g. ``"reliability"``.
    keep
        How many versions to keep on disk.
    """

    def __init__(self, root: str | os.PathLike[str], name: str, keep: int = 3) -> None:
        self.dir = Path(root) / name
        self.keep = keep

    def versions(self) -> list[int]:
        """Complete checkpoint versions on disk, oldest first."""
        if not self.dir.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, state: Any, meta: dict[str, Any] | None = None) -> int:
        """Write ``state`` as the next version; return the version number."""
        self.dir.mkdir(parents=True, exist_ok=True)
        version = (self.versions() or [0])[-1] + 1
        info = {**(meta or {}), "version": version, "saved_at": dt.datetime.now(dt.UTC).isoformat()}
        try:
            payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot pickle state for {self.dir}: {exc}") from exc
        # Metadata first, then the pickle: a version "exists" only once its .pkl is renamed in.
        self._atomic_write(self.dir / f"ckpt-{version:08d}.json", orjson.dumps(info, default=str))
        self._atomic_write(self.dir / f"ckpt-{version:08d}.pkl", payload)
        for old in self.versions()[: -self.keep]:
            for suffix in (".pkl", ".json"):
                (self.dir / f"ckpt-{old:08d}{suffix}").unlink(missing_ok=True)
        return version

    def load(self) -> tuple[Any, dict[str, Any]] | None:
        """The newest ``(state, meta)``, or ``None`` when there is no checkpoint yet."""
        versions = self.versions()
        if not versions:
            return None
        stem = self.dir / f"ckpt-{versions[-1]:08d}"
        try:
            state = pickle.loads(stem.with_suffix(".pkl").read_bytes())
            meta_path = stem.with_suffix(".json")
            meta = orjson.loads(meta_path.read_bytes()) if meta_path.exists() else {}
        except (OSError, pickle.UnpicklingError, EOFError, orjson.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint {stem}.pkl is unreadable: {exc}") from exc
        meta.setdefault("version", versions[-1])
        return state, meta

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
