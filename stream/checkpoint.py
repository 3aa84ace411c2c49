"""Versioned, atomic checkpoints of consumer state (models, scalers, trackers).

A checkpoint is one pickled object plus a small JSON metadata file, written to a temporary
file and renamed into place, so a crash mid-write never leaves a torn checkpoint: restore
always finds the last complete one. The newest ``keep`` versions are kept.

The metadata records the SHA-256 and the length of the pickle. :meth:`CheckpointStore.load`
tries the versions newest first and skips a bad one (truncated, garbled, wrong checksum,
unparseable metadata, a state of the wrong type): it is moved aside into ``bad/``, a warning
names it, and the next older version is tried. When none is good, ``load`` returns ``None``
(start fresh) instead of raising, so a corrupted checkpoint is never a crash loop.

Examples
--------
>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp(), "demo", expect=dict)
>>> store.load() is None
True
>>> store.save({"weights": [1, 2, 3]}, meta={"records_seen": 10})
1
>>> store.save({"weights": [4, 5, 6]}, meta={"records_seen": 20})
2
>>> state, meta = store.load()
>>> state["weights"], meta["records_seen"], meta["version"]
([4, 5, 6], 20, 2)

A damaged newest version is moved aside and the one before it restored:

>>> _ = (store.dir / "ckpt-00000002.pkl").write_bytes(b"garbage")
>>> state, meta = store.load()
>>> state["weights"], meta["version"], [why.split(":")[0] for _path, why in store.rejected_]
([1, 2, 3], 1, ['truncated or padded'])
>>> store.save({"weights": [7, 8, 9]})
3
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import pickle
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream.errors import CheckpointError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{8})\.pkl$")
_ANY = re.compile(r"^ckpt-(\d{8})\b")  # any file of a version, also those moved into bad/
_SHA256, _BYTES = "pickle_sha256", "pickle_bytes"


class _Bad(Exception):
    """One version is unusable: ``path`` is the file at fault, ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


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
    expect
        Optional type (or tuple of types) the restored state must be an instance of; a
        version holding anything else counts as bad.

    Attributes
    ----------
    dir : Path
        ``root/name``; bad versions are moved into ``dir/bad/``.
    rejected_ : list of (Path, str)
        The bad files the last :meth:`load` moved aside and why, newest first; empty when the
        newest version was good.

    Notes
    -----
    Version numbers only ever grow: the next one is one past the highest number seen in the
    folder *including* ``bad/``. Reusing the number of a version moved aside would give two
    different states the same number, so a log line or report saying "version 3 rejected"
    and a later "version 3 restored" would contradict each other, and the files in ``bad/``
    could not be matched to a save. ``bad/`` is never pruned: its files are evidence.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str,
        keep: int = 3,
        expect: type[Any] | tuple[type[Any], ...] | None = None,
    ) -> None:
        self.dir = Path(root) / name
        self.keep = keep
        self.expect = expect
        self.rejected_: list[tuple[Path, str]] = []

    @property
    def bad_dir(self) -> Path:
        """Where bad versions are moved aside."""
        return self.dir / "bad"

    def versions(self) -> list[int]:
        """Complete checkpoint versions on disk (not those in ``bad/``), oldest first."""
        if not self.dir.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _next_version(self) -> int:
        """One past the highest version number ever used here, ``bad/`` included."""
        highest = max(self.versions(), default=0)
        if self.bad_dir.is_dir():
            found = (_ANY.match(p.name) for p in self.bad_dir.iterdir())
            highest = max([highest, *(int(m.group(1)) for m in found if m)])
        return highest + 1

    def save(self, state: Any, meta: dict[str, Any] | None = None) -> int:
        """Write ``state`` as the next version; return the version number.

        The metadata gets ``version``, ``saved_at``, ``pickle_sha256`` and ``pickle_bytes``
        (overriding keys of those names in ``meta``).

        Raises
        ------
        CheckpointError
            When ``state`` cannot be pickled.
        OSError
            When the folder cannot be written.
        """
        version, write = self.prepare(state, meta)
        write()
        return version

    def prepare(
        self, state: Any, meta: dict[str, Any] | None = None
    ) -> tuple[int, Callable[[], None]]:
        """:meth:`save` in two steps: pickle ``state`` now (it may change once this returns)
        and return its version and a function that writes it (checksum, files, ``fsync``,
        pruning), which may run on another thread. Write each prepared version before
        preparing the next one: the version number is read from the folder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        version = self._next_version()
        try:
            payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"cannot pickle state for {self.dir}: {exc}") from exc
        saved_at = dt.datetime.now(dt.UTC).isoformat()

        def write() -> None:
            info = {
                **(meta or {}),
                "version": version,
                "saved_at": saved_at,
                _SHA256: hashlib.sha256(payload).hexdigest(),
                _BYTES: len(payload),
            }
            # Metadata first, then the pickle: a version "exists" once its .pkl is renamed in.
            stem = self.dir / f"ckpt-{version:08d}"
            self._atomic_write(stem.with_suffix(".json"), orjson.dumps(info, default=str))
            self._atomic_write(stem.with_suffix(".pkl"), payload)
            for old in self.versions()[: -self.keep]:
                for suffix in (".pkl", ".json"):
                    (self.dir / f"ckpt-{old:08d}{suffix}").unlink(missing_ok=True)

        return version, write

    def load(self) -> tuple[Any, dict[str, Any]] | None:
        """The newest good ``(state, meta)``, or ``None`` when there is none.

        Versions are tried newest first. A bad one is moved into ``bad/`` with a warning and
        recorded in :attr:`rejected_`; ``meta["version"]`` says which version was restored.
        A checkpoint written before checksums were recorded is verified as far as its
        metadata allows; one without a ``.json`` at all is accepted with a warning (``save``
        always writes the ``.json`` first, so its loss is not a torn write).
        """
        self.rejected_ = []
        for version in reversed(self.versions()):
            stem = self.dir / f"ckpt-{version:08d}"
            try:
                state, meta = self._read(stem)
            except _Bad as bad:
                self.rejected_.append((bad.path, bad.reason))
                moved = self._move_aside(stem)
                log.warning(
                    "checkpoint %s is bad (%s); %s; trying an older version",
                    bad.path,
                    bad.reason,
                    f"moved to {moved}.*" if moved else "could not move it aside",
                )
                continue
            meta["version"] = version
            return state, meta
        if self.rejected_:
            log.warning(
                "no good checkpoint in %s (%d bad moved aside); starting fresh",
                self.dir,
                len(self.rejected_),
            )
        return None

    def _read(self, stem: Path) -> tuple[Any, dict[str, Any]]:
        """Read and verify one version; raise :class:`_Bad` when it is unusable."""
        meta_path, pkl_path = stem.with_suffix(".json"), stem.with_suffix(".pkl")
        meta: dict[str, Any] = {}
        if meta_path.exists():
            try:
                loaded = orjson.loads(meta_path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise _Bad(meta_path, f"metadata is unreadable: {exc}") from exc
            if not isinstance(loaded, dict):
                raise _Bad(meta_path, f"metadata is a JSON {type(loaded).__name__}, not an object")
            meta = loaded
        else:
            log.warning("checkpoint %s has no metadata; its checksum cannot be verified", pkl_path)
        try:
            payload = pkl_path.read_bytes()
        except OSError as exc:
            raise _Bad(pkl_path, f"cannot read it: {exc}") from exc
        size, digest = meta.get(_BYTES), meta.get(_SHA256)
        if size is not None and len(payload) != size:
            raise _Bad(
                pkl_path, f"truncated or padded: {len(payload)} bytes, the metadata says {size}"
            )
        if digest is not None and hashlib.sha256(payload).hexdigest() != digest:
            raise _Bad(pkl_path, "checksum mismatch: the SHA-256 differs from the metadata's")
        try:
            state = pickle.loads(payload)
        except Exception as exc:  # a damaged or stale pickle raises almost anything
            raise _Bad(pkl_path, f"cannot unpickle it: {type(exc).__name__}: {exc}") from exc
        if self.expect is not None and not isinstance(state, self.expect):
            raise _Bad(
                pkl_path, f"holds a {type(state).__name__}, expected {_type_names(self.expect)}"
            )
        return state, meta

    def _move_aside(self, stem: Path) -> Path | None:
        """Move both files of a version into ``bad/`` under an unused, timestamped name.

        Returns the new path without its suffix, or ``None`` when the files could not be moved
        (the folder is then probably read-only and the next ``save`` fails loudly anyway).
        """
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            self.bad_dir.mkdir(exist_ok=True)
            tag, n = f"{stem.name}.{stamp}", 0
            while any((self.bad_dir / f"{tag}{s}").exists() for s in (".pkl", ".json")):
                n += 1
                tag = f"{stem.name}.{stamp}-{n}"
            for suffix in (".pkl", ".json"):
                src = stem.with_suffix(suffix)
                if src.exists():
                    os.replace(src, self.bad_dir / f"{tag}{suffix}")
        except OSError as exc:
            log.warning("cannot move checkpoint %s aside: %s", stem, exc)
            return None
        return self.bad_dir / tag

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


def _type_names(expect: type[Any] | tuple[type[Any], ...]) -> str:
    types = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join(t.__name__ for t in types)


class BackgroundWrites:
    """Prepared checkpoint writes (:meth:`CheckpointStore.prepare`) run on a thread of their
    own, one checkpoint at a time and in order: :meth:`submit` waits for the one before.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp(), "demo")
    >>> writes = BackgroundWrites()
    >>> version, write = store.prepare({"n": 1})
    >>> writes.submit([write])
    >>> writes.wait()
    >>> store.load()[0], store.versions()
    ({'n': 1}, [1])
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, writes: list[Callable[[], None]]) -> None:
        """Run ``writes`` in order on a new thread, once the previous ones are done."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(writes,), name="checkpoint-writes")
        self._thread.start()

    def _run(self, writes: list[Callable[[], None]]) -> None:
        try:
            for write in writes:
                write()
        except BaseException as exc:  # raised on the caller's thread by wait()
            self._error = exc

    def wait(self, raise_error: bool = True) -> None:
        """Until the writes submitted are done; re-raise the error one of them met (else, with
        ``raise_error=False``, log it)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is None:
            return
        if raise_error:
            raise error
        log.error("a checkpoint write failed: %s", error)
