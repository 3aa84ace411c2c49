"""Versioned atomic checkpoints, and the fallback past corrupted versions."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from stream import checkpoint
from stream.checkpoint import CheckpointStore
from stream.errors import CheckpointError


def test_versions_are_kept_and_pruned(tmp_path):
    store = CheckpointStore(tmp_path, "m", keep=2)
    for i in range(5):
        assert store.save({"i": i}, meta={"n": i}) == i + 1
    assert store.versions() == [4, 5]
    state, meta = store.load()
    assert state == {"i": 4} and meta["n"] == 4 and meta["version"] == 5 and "saved_at" in meta
    assert store.rejected_ == []


def test_metadata_records_the_pickle_checksum_and_length(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save({"i": 1})
    payload = (store.dir / "ckpt-00000001.pkl").read_bytes()
    meta = orjson.loads((store.dir / "ckpt-00000001.json").read_bytes())
    assert meta["pickle_sha256"] == hashlib.sha256(payload).hexdigest()
    assert meta["pickle_bytes"] == len(payload)


def test_torn_temp_files_are_ignored(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save([1])
    (store.dir / ".tmp-abc.pkl").write_bytes(b"half a pickle")
    assert store.load()[0] == [1]


# -- corruption of the newest version --------------------------------------------------------


def _reseal(pkl: Path, payload: bytes) -> None:
    """Replace a version's pickle and fix its metadata, so only unpickling or the type fails."""
    pkl.write_bytes(payload)
    meta_path = pkl.with_suffix(".json")
    meta = orjson.loads(meta_path.read_bytes())
    meta.update(pickle_sha256=hashlib.sha256(payload).hexdigest(), pickle_bytes=len(payload))
    meta_path.write_bytes(orjson.dumps(meta))


def _truncate(pkl: Path) -> None:
    pkl.write_bytes(pkl.read_bytes()[: len(pkl.read_bytes()) // 2])


def _garble(pkl: Path) -> None:
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2 :] = bytes(b ^ 0xFF for b in data[len(data) // 2 :])
    pkl.write_bytes(bytes(data))


def _empty(pkl: Path) -> None:
    pkl.write_bytes(b"")


def _garble_json(pkl: Path) -> None:
    pkl.with_suffix(".json").write_bytes(b'{"version": 3, "pickle_sha')


def _other_content(pkl: Path) -> None:
    same_length = pickle.dumps({"i": 9}, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(same_length) == len(pkl.read_bytes())
    pkl.write_bytes(same_length)


def _stale_class(pkl: Path) -> None:
    _reseal(pkl, b"cstream.checkpoint\nNoSuchClass\n(tR.")  # AttributeError on load


def _missing_module(pkl: Path) -> None:
    _reseal(pkl, b"cno_such_module_xyz\nThing\n(tR.")  # ModuleNotFoundError on load


def _wrong_type(pkl: Path) -> None:
    _reseal(pkl, pickle.dumps(["not", "a", "dict"]))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (corrupt the .pkl path, the file the warning names, words of the reason)
    "truncated": (_truncate, ".pkl", "truncated"),
    "garbled": (_garble, ".pkl", "checksum mismatch"),
    "empty": (_empty, ".pkl", "truncated"),
    "garbled-json": (_garble_json, ".json", "metadata is unreadable"),
    "checksum": (_other_content, ".pkl", "checksum mismatch"),
    "stale-class": (_stale_class, ".pkl", "AttributeError"),
    "missing-module": (_missing_module, ".pkl", "ModuleNotFoundError"),
    "wrong-type": (_wrong_type, ".pkl", "holds a list, expected dict"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.fault
def test_a_corrupted_newest_version_falls_back_to_the_previous_one(tmp_path, caplog, kind):
    corrupt, culprit, reason = CORRUPTIONS[kind]
    store = CheckpointStore(tmp_path, "m", expect=dict)
    for i in (1, 2, 3):
        store.save({"i": i}, meta={"n": i})
    newest = store.dir / "ckpt-00000003.pkl"
    corrupt(newest)

    with caplog.at_level(logging.WARNING, logger="stream.checkpoint"):
        state, meta = store.load()

    assert state == {"i": 2} and meta["version"] == 2 and meta["n"] == 2
    bad_file = newest.with_suffix(culprit)
    assert len(store.rejected_) == 1
    assert store.rejected_[0][0] == bad_file and reason in store.rejected_[0][1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad_file) in w and reason in w for w in warnings), warnings
    # both files of version 3 moved aside, nothing of it left in the folder
    moved = sorted(p.name for p in (store.dir / "bad").iterdir())
    assert len(moved) == 2 and all(n.startswith("ckpt-00000003.") for n in moved)
    assert {Path(n).suffix for n in moved} == {".pkl", ".json"}
    assert store.versions() == [1, 2]
    assert not list(store.dir.glob("ckpt-00000003*"))
    # the next save does not reuse number 3, and loads back
    assert store.save({"i": 4}) == 4
    state, meta = store.load()
    assert state == {"i": 4} and meta["version"] == 4 and store.rejected_ == []


def test_every_version_corrupt_starts_fresh(tmp_path, caplog):
    store = CheckpointStore(tmp_path, "m")
    for i in (1, 2, 3):
        store.save({"i": i})
    for v in (1, 2, 3):
        _truncate(store.dir / f"ckpt-{v:08d}.pkl")
    with caplog.at_level(logging.WARNING, logger="stream.checkpoint"):
        assert store.load() is None
    assert [p.name for p, _ in store.rejected_] == [f"ckpt-0000000{v}.pkl" for v in (3, 2, 1)]
    assert "starting fresh" in caplog.records[-1].getMessage()
    assert store.versions() == [] and len(list((store.dir / "bad").iterdir())) == 6
    assert store.save({"i": 4}) == 4
    assert store.load()[0] == {"i": 4}


def test_moved_aside_files_are_never_overwritten(tmp_path, monkeypatch):
    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    monkeypatch.setattr(checkpoint, "dt", SimpleNamespace(datetime=Frozen, UTC=dt.UTC))
    store = CheckpointStore(tmp_path, "m")
    store.save({"i": 1})
    files = {s: (store.dir / f"ckpt-00000001{s}").read_bytes() for s in (".pkl", ".json")}
    for junk in (b"", b"x"):  # the same version damaged twice, e.g. put back from a backup
        for suffix, data in files.items():
            (store.dir / f"ckpt-00000001{suffix}").write_bytes(data)
        (store.dir / "ckpt-00000001.pkl").write_bytes(junk)
        assert store.load() is None
    moved = sorted((store.dir / "bad").iterdir())
    assert [p.name for p in moved] == [
        "ckpt-00000001.20250102T030405000000Z-1.json",
        "ckpt-00000001.20250102T030405000000Z-1.pkl",
        "ckpt-00000001.20250102T030405000000Z.json",
        "ckpt-00000001.20250102T030405000000Z.pkl",
    ]
    assert moved[1].read_bytes() == b"x" and moved[3].read_bytes() == b""


def test_old_format_checkpoint_without_checksum_still_loads(tmp_path):
    store = CheckpointStore(tmp_path, "m", expect=dict)
    store.save({"i": 1}, meta={"n": 1})
    meta_path = store.dir / "ckpt-00000001.json"
    meta = orjson.loads(meta_path.read_bytes())
    del meta["pickle_sha256"], meta["pickle_bytes"]
    meta_path.write_bytes(orjson.dumps(meta))
    state, meta = store.load()
    assert state == {"i": 1} and meta["n"] == 1 and meta["version"] == 1
    assert store.rejected_ == []


def test_old_format_garbled_pickle_is_caught_by_unpickling(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save({"i": 1})
    store.save({"i": 2})
    meta_path = store.dir / "ckpt-00000002.json"
    meta_path.write_bytes(orjson.dumps({"version": 2}))
    (store.dir / "ckpt-00000002.pkl").write_bytes(b"garbage")
    assert store.load()[0] == {"i": 1}
    assert "cannot unpickle" in store.rejected_[0][1]


def test_a_pickle_without_metadata_is_accepted_with_a_warning(tmp_path, caplog):
    store = CheckpointStore(tmp_path, "m")
    store.save({"i": 1})
    (store.dir / "ckpt-00000001.json").unlink()
    with caplog.at_level(logging.WARNING, logger="stream.checkpoint"):
        state, meta = store.load()
    assert state == {"i": 1} and meta == {"version": 1}
    assert "no metadata" in caplog.text


def test_metadata_that_is_not_an_object_is_bad(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save({"i": 1})
    store.save({"i": 2})
    (store.dir / "ckpt-00000002.json").write_bytes(b"[1, 2]")
    assert store.load()[0] == {"i": 1}
    assert "not an object" in store.rejected_[0][1]


def test_expect_accepts_a_tuple_of_types(tmp_path):
    store = CheckpointStore(tmp_path, "m", expect=(dict, list))
    store.save([1])
    assert store.load()[0] == [1]
    store = CheckpointStore(tmp_path, "m", expect=(dict, tuple))
    assert store.load() is None
    assert "expected dict or tuple" in store.rejected_[0][1]


def test_unpicklable_state_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot pickle"):
        CheckpointStore(tmp_path, "m").save(lambda: None)


def test_a_prepared_checkpoint_is_the_state_when_prepared_and_written_later(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    state = {"seen": [1, 2]}
    version, write = store.prepare(state)
    state["seen"].append(3)  # the loop goes on while the write waits
    assert version == 1 and store.versions() == []  # nothing on disk until written
    writes = checkpoint.BackgroundWrites()
    writes.submit([write])
    writes.wait()
    assert store.load()[0] == {"seen": [1, 2]}
    assert store.prepare(state)[0] == 2


def test_a_background_write_that_failed_raises_at_the_next_wait(tmp_path, caplog):
    store = CheckpointStore(tmp_path, "m")
    _, write = store.prepare({"n": 1})
    order: list[str] = []

    def broken() -> None:
        order.append("broken")
        raise OSError(28, "No space left on device")

    writes = checkpoint.BackgroundWrites()
    writes.submit([lambda: order.append("first"), broken, lambda: order.append("never")])
    with pytest.raises(OSError, match="No space left"):
        writes.wait()
    assert order == ["first", "broken"]  # in order, and none after the failure
    writes.wait()  # raised once
    writes.submit([write, broken])
    with caplog.at_level(logging.ERROR, logger="stream.checkpoint"):
        writes.wait(raise_error=False)
    assert "checkpoint write failed: [Errno 28] No space left" in caplog.text
    assert store.versions() == [1]
