"""One answer wherever the data comes from: a recording on one partition through the real broker
and the same recording read with ``--from-file`` give identical outputs, per processor (the
same alerts with the same incident and alert ids, the same predictions); so do six partitions
read from a full backlog, and six partitions with a kill -9 and a restart mid-stream (the
outputs between the last checkpoint and the kill repeat, identical); one bad record makes one
dead letter for a group that runs several processors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers import __main__ as run_cli
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.kafka import make_admin, make_consumer, make_producer
from stream.records import Alert, DeadLetter, Prediction, decode
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

BAD = [b"{not json", b'{"timestamp": "2026-01-05T00:00:00Z", "node_id": "n-002", "rtt_ms": -5}']

#: Each processor with small, deterministic settings (inline refits and retrains).
PROCESSORS = {
    "reliability": ["--param", "background=false", "--param", "warmup=300"],
    "bandwidth": ["--window", "10", "--units", "8", "--horizons", "1,5", "--warmup-windows", "600",
                  "--retrain-every", "1500", "--retrain-windows", "600", "--sync-retrain",
                  "--fit-batch", "64", "--accuracy-every", "1000"],
    "consensus": ["--window", "10", "--units", "8", "--warmup-windows", "1500",
                  "--retrain-every", "3000", "--sync-retrain", "--fit-batch", "32"],
    "compression": ["--train-every", "500", "--sync-train"],
    "ingest": [],
}  # fmt: skip
OUTPUT = {"reliability": "alerts", "consensus": "alerts", "bandwidth": "predictions",
          "compression": "predictions", "ingest": "dead-letter"}  # fmt: skip


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[bytes, bytes]]]:
    """10 nodes x 2 links at 5 s for 600 intervals with incidents, plus two bad records."""
    cats = ("consensus_degradation", "crash", "network_failure")
    fleet = Fleet(
        FleetConfig(nodes=10, links_per_node=2, seed=4, interval_s=5.0, incident_rate=3.0, categories=cats)
    )
    enc = RecordEncoder(fleet.topology)
    records: list[tuple[bytes, bytes]] = []
    for i in range(600):
        s = fleet.step()
        records += zip(enc.keys(s), enc.encode(enc.records(s)), strict=True)
        if i == 50:
            records += [(b"n-001", BAD[0]), (b"n-002", BAD[1])]
    path = tmp_path_factory.mktemp("eq") / "rec.jsonl"
    path.write_bytes(b"".join(v + b"\n" for _k, v in records))
    return path, records


def topics_with(kafka_bootstrap: str, partitions: int) -> Iterator[Settings]:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t-{uuid.uuid4().hex[:12]}.",
        partitions=partitions,
        poll_timeout_ms=200,
    )
    ensure_topics(settings)
    yield settings
    with make_admin(settings) as admin:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])


@pytest.fixture
def one_partition(kafka_bootstrap: str) -> Iterator[Settings]:
    yield from topics_with(kafka_bootstrap, 1)


@pytest.fixture
def six_partitions(kafka_bootstrap: str) -> Iterator[Settings]:
    yield from topics_with(kafka_bootstrap, 6)


def read_values(settings: Settings, logical: str) -> list[bytes]:
    consumer = make_consumer(
        settings, [settings.topic(logical)], group_id=f"r-{uuid.uuid4().hex}", from_beginning=True
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


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    with make_producer(settings) as p:
        for key, value in records:
            p.produce(settings.topic("telemetry"), value, key)
        p.flush(30)


def common(settings: Settings, tmp: Path, batch: int = 500) -> list[str]:
    return ["--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix",
            settings.topic_prefix, "--batch-size", str(batch), "--state-dir", str(tmp / "state"),
            "--no-checkpoint"]  # fmt: skip


def file_values(out: Path, settings: Settings, logical: str) -> list[bytes]:
    path = out / f"{settings.topic(logical)}.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_file_and_one_partition_give_identical_outputs(
    name: str, recording, one_partition: Settings, tmp_path: Path
) -> None:
    path, records = recording
    produce(one_partition, records)
    flags = [*common(one_partition, tmp_path), *PROCESSORS[name]]
    kafka = ["--from-beginning", "--idle-timeout", "4", "--group-id", f"g-{uuid.uuid4().hex[:8]}"]
    assert run_cli.main(["run", name, *flags, *kafka]) == 0
    out = tmp_path / "out"
    assert run_cli.main(["run", name, *flags, "--from-file", str(path), "--output-dir", str(out)]) == 0

    logical = OUTPUT[name]
    from_kafka = read_values(one_partition, logical)
    from_file = file_values(out, one_partition, logical)
    if logical == "dead-letter":  # the origin differs by design (topic vs file, offset vs line)
        from_kafka = [decode(v, DeadLetter).original for v in from_kafka]
        from_file = [decode(v, DeadLetter).original for v in from_file]
        assert sorted(from_file) == sorted(BAD)
    assert from_file, f"{name} produced nothing to compare"
    assert from_kafka == from_file  # byte for byte, in order


def test_several_processors_share_one_decode_and_dead_letter_once(
    recording, one_partition: Settings, tmp_path: Path
) -> None:
    _path, records = recording
    produce(one_partition, records)
    names = ["reliability", "compression", "ingest"]
    flags = [*common(one_partition, tmp_path), "--from-beginning", "--idle-timeout", "4"]
    flags += ["--reliability.param", "background=false", "--compression.train-every", "500", "--compression.sync-train"]
    assert run_cli.main(["run", *names, *flags]) == 0
    letters = [decode(v, DeadLetter) for v in read_values(one_partition, "dead-letter")]
    assert sorted(d.original for d in letters) == sorted(BAD)  # once, not once per processor
    assert {d.consumer for d in letters} == {"dwcp-reliability+compression+ingest"}
    assert read_values(one_partition, "alerts") and read_values(one_partition, "predictions")


def offline_alerts(path: Path, settings: Settings, tmp: Path) -> list[bytes]:
    out = tmp / "offline"
    flags = [*common(settings, tmp), *PROCESSORS["reliability"]]
    assert run_cli.main(["run", "reliability", *flags, "--from-file", str(path), "--output-dir", str(out)]) == 0
    alerts = file_values(out, settings, "alerts")
    assert alerts and len(set(alerts)) == len(alerts)
    return alerts


def test_six_partitions_from_a_backlog_give_the_file_s_alerts(
    recording, six_partitions: Settings, tmp_path: Path
) -> None:
    path, records = recording
    produce(six_partitions, records)
    flags = [*common(six_partitions, tmp_path, batch=300), *PROCESSORS["reliability"]]
    kafka = ["--from-beginning", "--idle-timeout", "6", "--group-id", f"g-{uuid.uuid4().hex[:8]}"]
    assert run_cli.main(["run", "reliability", *flags, *kafka]) == 0
    from_kafka = read_values(six_partitions, "alerts")
    # the alerts topic has six partitions too: compare as multisets, not in topic order
    assert sorted(from_kafka) == sorted(offline_alerts(path, six_partitions, tmp_path))


@pytest.mark.parametrize("name", ["bandwidth", "compression", "consensus"])
def test_six_partitions_from_a_backlog_give_the_file_s_outputs(
    name: str, recording, six_partitions: Settings, tmp_path: Path
) -> None:
    """The models change what is shared between keys only at points counted in records (the
    forecaster's and the autoencoder's step boundaries, the policy's micro-batch updates), and
    the shell hands both sources over in one event-time order: batches of 300 from six
    partitions and of 500 from the file give the same outputs, fits, retrains, updates and the
    forecaster's running accuracy records included."""
    path, records = recording
    produce(six_partitions, records)
    flags = [*common(six_partitions, tmp_path, batch=300), *PROCESSORS[name]]
    kafka = ["--from-beginning", "--idle-timeout", "6", "--group-id", f"g-{uuid.uuid4().hex[:8]}"]
    assert run_cli.main(["run", name, *flags, *kafka]) == 0
    out = tmp_path / "offline"
    flags = [*common(six_partitions, tmp_path, batch=500), *PROCESSORS[name]]
    assert run_cli.main(["run", name, *flags, "--from-file", str(path), "--output-dir", str(out)]) == 0

    logical, kind = OUTPUT[name], Alert if OUTPUT[name] == "alerts" else Prediction

    from_file = sorted(file_values(out, six_partitions, logical))
    versions = {str(getattr(decode(v, kind), "model_version", None) or decode(v, kind).model_versions)
                for v in from_file}  # fmt: skip
    assert len(from_file) >= 10 and len(versions) >= 2  # fits, retrains or updates inside
    if name == "bandwidth":
        assert sum(b'"kind":"bandwidth_accuracy"' in v for v in from_file) >= 3
    assert sorted(read_values(six_partitions, logical)) == from_file


@pytest.mark.fault
def test_a_kill_9_and_restart_mid_stream_change_no_alert(
    recording, six_partitions: Settings, tmp_path: Path
) -> None:
    path, records = recording
    produce(six_partitions, records)
    group = f"g-{uuid.uuid4().hex[:8]}"
    flags = [*common(six_partitions, tmp_path, batch=200), *PROCESSORS["reliability"]]
    flags.remove("--no-checkpoint")  # the restart restores the last checkpoint
    argv = [sys.executable, "-m", "consumers", "run", "reliability", *flags, "--from-beginning",
            "--group-id", group, "--checkpoint-interval", "3600", "--interval", "1"]  # fmt: skip
    # the only checkpoint before the kill is the one at the first commit: the restart must
    # read everything after it again
    env = {**os.environ, "DWCP_BACKEND": os.environ.get("DWCP_BACKEND", "confluent")}
    topic = six_partitions.topic("telemetry")
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with make_admin(six_partitions) as admin:
            deadline = time.monotonic() + 120
            while sum(admin.group_offsets(group, topic).values()) < len(records) // 2:
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the first run committed too little in 120 s"
                time.sleep(0.05)
            committed = sum(admin.group_offsets(group, topic).values())
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    assert committed < len(records), "killed too late to test anything"
    second = subprocess.run(
        [*argv, "--idle-timeout", "6"], env=env, capture_output=True, text=True, timeout=240
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "restored checkpoint" in second.stderr
    from_kafka = read_values(six_partitions, "alerts")
    offline = offline_alerts(path, six_partitions, tmp_path)
    # at least once: alerts between the last checkpoint and the kill come twice, identical
    assert set(from_kafka) == set(offline)
    assert len(from_kafka) >= len(offline)
