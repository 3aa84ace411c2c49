"""State that follows its partition (``--state-shards``, :mod:`stream.shards`), on the real broker:
two members of one group with a rebalance mid-stream, and one member killed with kill -9 and
restarted, publish the alerts of one ``--from-file`` run with the same shards (same ids, same
bytes; at least once, so an alert may repeat, identical)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from consumers import __main__ as run_cli
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.kafka import make_admin, make_consumer, make_producer
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SHARDS = ["--state-shards", "6", "--param", "background=false", "--param", "warmup=300"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[bytes, bytes]]]:
    """12 nodes x 2 links at 5 s for 500 intervals, with crashes and network failures."""
    cats = ("consensus_degradation", "crash", "network_failure")
    fleet = Fleet(
        FleetConfig(nodes=12, links_per_node=2, seed=6, interval_s=5.0, incident_rate=3.0, categories=cats)
    )
    enc = RecordEncoder(fleet.topology)
    records: list[tuple[bytes, bytes]] = []
    for _ in range(500):
        s = fleet.step()
        records += zip(enc.keys(s), enc.encode(enc.records(s)), strict=True)
    path = tmp_path_factory.mktemp("shards") / "rec.jsonl"
    path.write_bytes(b"".join(v + b"\n" for _k, v in records))
    return path, records


@pytest.fixture
def six(kafka_bootstrap: str) -> Iterator[Settings]:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t-{uuid.uuid4().hex[:12]}.",
        partitions=6,
        poll_timeout_ms=200,
    )
    ensure_topics(settings)
    yield settings
    with make_admin(settings) as admin:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    with make_producer(settings) as p:
        for key, value in records:
            p.produce(settings.topic("telemetry"), value, key)
        p.flush(30)


def read_alerts(settings: Settings) -> list[bytes]:
    consumer = make_consumer(
        settings, [settings.topic("alerts")], group_id=f"r-{uuid.uuid4().hex}", from_beginning=True
    )
    got: list[bytes] = []
    try:
        empty = 0
        while empty < 10:
            batch = consumer.poll_batch(5000, 200)
            empty = 0 if batch else empty + 1
            got += [m.value for m in batch]
    finally:
        consumer.close()
    return got


def offline(path: Path, tmp: Path) -> list[bytes]:
    out = tmp / "offline"
    argv = ["run", "reliability", *SHARDS, "--no-checkpoint", "--state-dir", str(tmp / "s0"),
            "--from-file", str(path), "--output-dir", str(out)]  # fmt: skip
    assert run_cli.main(argv) == 0
    alerts = (out / "dwcp.alerts.jsonl").read_bytes().splitlines()
    assert alerts and len(set(alerts)) == len(alerts)
    return alerts


def one_content_per_id(alerts: list[bytes]) -> None:
    by_id: dict[str, set[bytes]] = {}
    for a in alerts:
        by_id.setdefault(orjson.loads(a)["alert_id"], set()).add(a)
    assert all(len(v) == 1 for v in by_id.values()), "an alert id was published with two contents"


def clean_cut(records: list[tuple[bytes, bytes]], i: int) -> int:
    """The first index from ``i`` on where every later record is newer than every earlier one:
    produced after a cut inside an interval, the rest would arrive late (a different order)."""
    ts = [orjson.loads(v)["timestamp"] for _k, v in records]  # one format: sorts as text
    while i < len(ts) and min(ts[i:]) <= max(ts[:i]):
        i += 1
    return i


def member(settings: Settings, tmp: Path, group: str, name: str) -> tuple[subprocess.Popen, Path]:
    argv = [sys.executable, "-m", "consumers", "run", "reliability", *SHARDS,
            "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix",
            settings.topic_prefix, "--batch-size", "200", "--state-dir", str(tmp / "state"),
            "--from-beginning", "--group-id", group, "--interval", "1",
            "--checkpoint-interval", "3600"]  # fmt: skip
    env = {**os.environ, "DWCP_BACKEND": os.environ.get("DWCP_BACKEND", "confluent")}
    log = tmp / f"{name}.log"
    return subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT), log


def wait_committed(settings: Settings, group: str, n: int, procs: list, logs: list[Path]) -> None:
    topic = settings.topic("telemetry")
    deadline = time.monotonic() + 150
    with make_admin(settings) as admin:
        while sum(admin.group_offsets(group, topic).values()) < n:
            for p, log in zip(procs, logs, strict=True):
                assert p.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the group committed fewer than {n:,d} in 150 s"
            time.sleep(0.1)


def stop(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p, log in zip(procs, logs, strict=True):
        assert p.wait(60) == 0, log.read_text()[-3000:]


@pytest.mark.fault
def test_two_members_and_a_rebalance_mid_stream_give_the_file_s_alerts(
    recording, six: Settings, tmp_path: Path
) -> None:
    path, records = recording
    half = clean_cut(records, len(records) // 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(six, records[:half])
    a, a_log = member(six, tmp_path, group, "a")
    procs, logs = [a], [a_log]
    try:
        wait_committed(six, group, half, procs, logs)  # a alone has read the first half
        b, b_log = member(six, tmp_path, group, "b")
        procs.append(b)
        logs.append(b_log)
        deadline = time.monotonic() + 90
        while "restored from checkpoint" not in b_log.read_text():  # b took shards over from a
            assert b.poll() is None, b_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "b was never assigned a partition"
            time.sleep(0.2)
        produce(six, records[half:])  # the second half, read by both
        wait_committed(six, group, len(records), procs, logs)
        stop(procs, logs)
    finally:
        for p in procs:
            p.kill()
            p.wait(30)
    # both did work after the rebalance: each owned shards and checkpointed them while stopping,
    # on its shutdown or on the revoke that the other member's leaving started first (the
    # members get SIGTERM one after the other: one run in a few, a's revoke came first)
    for log in (a_log, b_log):
        text = log.read_text()
        assert "SIGTERM received" in text, text[-3000:]
        stopping = text.split("SIGTERM received", 1)[1]
        assert re.search(r"checkpoint of shard\(s\) [\d,]+ \((shutdown|revoke)\)", stopping), text[-3000:]
    got = read_alerts(six)
    one_content_per_id(got)
    assert set(got) == set(offline(path, tmp_path))


@pytest.mark.fault
def test_a_kill_9_of_a_sharded_member_and_restart_change_no_alert(
    recording, six: Settings, tmp_path: Path
) -> None:
    path, records = recording
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce(six, records)
    first, log = member(six, tmp_path, group, "first")
    try:  # the only checkpoint before the kill is the first commit's: the restart re-reads
        wait_committed(six, group, len(records) // 2, [first], [log])
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    second, log2 = member(six, tmp_path, group, "second")
    try:
        wait_committed(six, group, len(records), [second], [log2])
        stop([second], [log2])
    finally:
        second.kill()
        second.wait(30)
    assert "restored from checkpoint" in log2.read_text()
    got = read_alerts(six)
    one_content_per_id(got)
    assert set(got) == set(offline(path, tmp_path))
