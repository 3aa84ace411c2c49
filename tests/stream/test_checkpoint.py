"""Versioned atomic checkpoints."""

from __future__ import annotations

import pytest

from stream.checkpoint import CheckpointStore
from stream.errors import CheckpointError


def test_versions_are_kept_and_pruned(tmp_path):
    store = CheckpointStore(tmp_path, "m", keep=2)
    for i in range(5):
        assert store.save({"i": i}, meta={"n": i}) == i + 1
    assert store.versions() == [4, 5]
    state, meta = store.load()
    assert state == {"i": 4} and meta["n"] == 4 and meta["version"] == 5 and "saved_at" in meta


def test_torn_temp_files_are_ignored_and_corruption_is_reported(tmp_path):
    store = CheckpointStore(tmp_path, "m")
    store.save([1])
    (store.dir / ".tmp-abc.pkl").write_bytes(b"half a pickle")
    assert store.load()[0] == [1]
    (store.dir / "ckpt-00000001.pkl").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        store.load()


def test_unpicklable_state_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot pickle"):
        CheckpointStore(tmp_path, "m").save(lambda: None)
