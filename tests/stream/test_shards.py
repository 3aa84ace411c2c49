"""State per shard (:mod:`stream.shards`) without a broker: the shard of a key is the partition
the Java/kafka-python partitioner gives it, each shard's state depends on its own keys only,
shard checkpoints restore with ``--with-state``, and what cannot be sharded fails with a clear
error. The broker tests (two members and a rebalance, kill -9) are in
``tests/consumers/test_reliability_shards.py``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers import __main__ as run_cli
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream import app
from stream.errors import DwcpError
from stream.shards import ShardSet, shard_of, shards_on

FLAGS = ["--param", "background=false", "--param", "warmup=200"]


#: Java's ``Utils.murmur2`` on these keys (Apache Kafka's ``UtilsTest.testMurmur2``)
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829, b"abc": 479470107}  # fmt: skip


def test_the_shard_of_a_key_is_the_partition_the_java_client_picks() -> None:
    for key, h in JAVA_MURMUR2.items():
        for n in (1, 2, 3, 6, 12):
            assert shard_of(key, n) == (h & 0x7FFFFFFF) % n  # Java: toPositive(murmur2) % n


def test_each_shard_lives_on_one_partition_when_the_partition_count_divides_it() -> None:
    for p in (1, 2, 3, 6):
        owners = {k: part for part in range(p) for k in shards_on(part, p, 6)}
        assert sorted(owners) == list(range(6))  # every shard on exactly one partition
        for i in range(100):
            key = f"n-{i}".encode()
            assert owners[shard_of(key, 6)] == shard_of(key, p)


class Global(app.Processor):
    name = "global"

    def __init__(self, settings: Any, args: argparse.Namespace, state: Any | None) -> None:
        pass

    def handle(self, batch: list[Any]) -> list[Any]:
        return []

    def state(self, final: bool = False) -> Any:
        return None


def test_what_cannot_be_sharded_is_refused_naming_the_cause(tmp_path: Path) -> None:
    with pytest.raises(DwcpError, match="partition count divides"):
        ShardSet([], lambda name, k: None, shards=6, partitions=4)
    path = tmp_path / "r.jsonl"
    path.write_text('{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-1"}\n')
    base = ["--from-file", str(path), "--state-shards", "6"]
    with pytest.raises(DwcpError, match="global keeps one state"):
        app.App([Global], base, environ={})
    with pytest.raises(DwcpError, match="needs event-time alignment"):
        app.App([Global], [*base, "--no-align"], environ={})
    with pytest.raises(DwcpError, match="--learn-from"):
        app.App([Global], [*base, "--learn-from", str(path)], environ={})


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cats = ("crash", "network_failure", "memory_leak")
    fleet = Fleet(FleetConfig(nodes=8, links_per_node=2, seed=3, interval_s=5.0,
                              incident_rate=3.0, categories=cats))  # fmt: skip
    enc = RecordEncoder(fleet.topology)
    lines = []
    for _ in range(400):
        lines += enc.encode(enc.records(fleet.step()))
    path = tmp_path_factory.mktemp("shards") / "fleet.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in lines))
    return path


def alerts_of(path: Path, out: Path, *flags: str) -> list[bytes]:
    argv = ["run", "reliability", *FLAGS, "--from-file", str(path), "--output-dir", str(out), *flags]
    assert run_cli.main(argv) == 0
    got = out / "dwcp.alerts.jsonl"
    return got.read_bytes().splitlines() if got.exists() else []


def test_a_shard_s_alerts_are_those_of_its_keys_alone(fleet_file: Path, tmp_path: Path) -> None:
    sharded = alerts_of(fleet_file, tmp_path / "all", "--state-shards", "3")
    assert sharded
    lines = fleet_file.read_bytes().splitlines()
    for k in range(3):
        mine = [x for x in lines if shard_of(orjson.loads(x)["node_id"].encode(), 3) == k]
        alone = tmp_path / f"shard{k}.jsonl"
        alone.write_bytes(b"".join(x + b"\n" for x in mine))
        expect = alerts_of(alone, tmp_path / f"out{k}")  # one state, only this shard's nodes
        nodes = {orjson.loads(x)["node_id"] for x in mine}
        assert [a for a in sharded if orjson.loads(a)["node_id"] in nodes] == expect
    whole = alerts_of(fleet_file, tmp_path / "one")
    assert whole != sharded  # one state for every key is a different answer (stated)


def test_shard_checkpoints_restore_into_the_next_run(fleet_file: Path, tmp_path: Path) -> None:
    lines = fleet_file.read_bytes().splitlines()
    cut = len(lines) // 2
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b"".join(x + b"\n" for x in lines[:cut]))
    second.write_bytes(b"".join(x + b"\n" for x in lines[cut:]))
    state = ["--with-state", "--state-dir", str(tmp_path / "state"), "--state-shards", "3"]
    alerts_of(first, tmp_path / "o1", *state)
    folders = sorted(p.name for p in (tmp_path / "state").glob("*/shards-3/shard-*"))
    assert folders == ["shard-000", "shard-001", "shard-002"]
    resumed = alerts_of(second, tmp_path / "o2", *state)
    fresh = alerts_of(second, tmp_path / "o3", "--state-shards", "3")
    assert resumed != fresh  # the restored shards knew the first half
