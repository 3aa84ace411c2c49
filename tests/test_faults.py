"""Faults on the real broker (``pytest -m fault`` runs every fault test on its own).

Here: the broker stopped and started again while the synthetic producer and a reliability
consumer are both running. The others live beside the code they break: kill -9 and restart
(``tests/consumers/test_file_kafka_equivalence.py``), corrupted checkpoints
(``tests/stream/test_checkpoint.py``), a poisoned timestamp (``tests/consumers/
test_reliability.py``, ``tests/stream/test_alignment.py``), orphaned workers
(``tests/stream/test_workers.py``) and a rebalance mid-stream, a second member joining with
``--state-shards`` (``tests/consumers/test_reliability_shards.py``). Each checks that no record is left unprocessed, no alert id
is published with two different contents, and the alerts are those of a clean run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.kafka import make_admin, make_consumer
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
FLEET = ["--nodes", "8", "--links", "1", "--interval", "5", "--seed", "11", "--incident-rate", "4",
         "--categories", "crash,network_failure", "--count", "24000", "--progress-interval", "0"]  # fmt: skip
DETECTOR = ["--param", "background=false", "--param", "warmup=300"]


def kafka_local(command: str) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/kafka-local.sh"), command],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        env={**os.environ, "KAFKA_PORT": os.environ.get("KAFKA_PORT", "9092")},
    )  # fmt: skip
    assert done.returncode in (0, 3), f"kafka-local.sh {command}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Settings]:
    if not kafka_local("status").startswith("running"):
        pytest.fail(
            "the fault tests stop and start the broker, so it must be one scripts/kafka-local.sh "
            "started (scripts/test.sh does): this one was started some other way",
            pytrace=False,
        )
    s = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t-{uuid.uuid4().hex[:12]}.",
                 partitions=3)  # fmt: skip
    ensure_topics(s)
    yield s
    kafka_local("start")  # whatever happened, leave the broker running
    with make_admin(s) as admin:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(s.topic_prefix)])


def read_all(settings: Settings, logical: str) -> list[bytes]:
    consumer = make_consumer(settings, [settings.topic(logical)], group_id=f"r-{uuid.uuid4().hex}",
                             from_beginning=True)  # fmt: skip
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


def one_content_per_alert_id(values: list[bytes]) -> dict[str, bytes]:
    by_id: dict[str, bytes] = {}
    for v in values:
        aid = json.loads(v)["alert_id"]
        assert by_id.setdefault(aid, v) == v, f"alert id {aid} published with two contents"
    return by_id


@pytest.mark.timeout(400)
def test_a_broker_stopped_mid_stream_loses_repeats_and_changes_nothing(
    topics: Settings, tmp_path: Path
) -> None:
    py = sys.executable
    # the clean run: the same records from a file, scored offline
    ref = tmp_path / "ref.jsonl"
    subprocess.run([py, "-m", "producers.synthetic", *FLEET, "--rate", "0", "--output", str(ref)],
                   check=True, timeout=120)  # fmt: skip
    subprocess.run([py, "-m", "consumers.reliability", "--from-file", str(ref), "--output-dir",
                    str(tmp_path / "offline"), *DETECTOR], check=True, timeout=240,
                   capture_output=True)  # fmt: skip
    offline = (tmp_path / "offline" / "dwcp.alerts.jsonl").read_bytes().splitlines()
    assert any(b'"crash"' in a for a in offline), "the fleet should have crashes to detect"

    conn = ["--bootstrap-servers", topics.bootstrap_servers, "--topic-prefix", topics.topic_prefix]
    group = f"g-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DWCP_BACKEND": "confluent"}
    logs = [(tmp_path / f"{n}.log").open("wb") for n in ("consumer", "producer")]
    consumer = subprocess.Popen(
        [py, "-m", "consumers.reliability", *conn, "--group-id", group, "--from-beginning",
         "--state-dir", str(tmp_path / "state"), "--interval", "2", *DETECTOR],
        env=env, stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    producer = subprocess.Popen(
        [py, "-m", "producers.synthetic", *FLEET, "--rate", "2000", *conn, "--backend",
         "kafka-python"],
        stdout=logs[1], stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(4)  # about a third of the records are out
        assert producer.poll() is None and consumer.poll() is None, "started too slowly"
        t0 = time.monotonic()
        kafka_local("stop")
        time.sleep(8)
        kafka_local("start")
        outage = time.monotonic() - t0
        assert producer.wait(180) == 0, (tmp_path / "producer.log").read_text()[-3000:]
        topic = topics.topic("telemetry")
        with make_admin(topics) as admin:
            end = sum(e for _s, e in admin.partition_offsets(topic).values())
            deadline = time.monotonic() + 180
            while sum(admin.group_offsets(group, topic).values()) < end:
                assert consumer.poll() is None, (tmp_path / "consumer.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the consumer did not catch up in 180 s"
                time.sleep(0.5)
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(60) == 0, (tmp_path / "consumer.log").read_text()[-3000:]
    finally:
        for p in (producer, consumer):
            if p.poll() is None:
                p.kill()
                p.wait(30)
        for f in logs:
            f.close()
    assert outage >= 8
    # nothing lost or repeated on the way in (idempotent producer), every record processed
    assert end == 24000
    assert sorted(read_all(topics, "telemetry")) == sorted(ref.read_bytes().splitlines())
    # the alerts of the clean run, each id with one content (a repeat after a retried batch
    # would be identical)
    alerts = read_all(topics, "alerts")
    assert one_content_per_alert_id(alerts) == one_content_per_alert_id(offline)
