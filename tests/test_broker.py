"""The local Kafka broker really works, and its control script documents itself."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

REPO_ROOT = Path(__file__).resolve().parent.parent

N_MESSAGES = 100
KEYS = [f"sensor-{k}" for k in range(7)]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_produce_consume_round_trip_keeps_per_key_order(
    kafka_bootstrap: str, topic_factory, group_id: str
) -> None:
    topic = topic_factory(partitions=3)

    # Produce 100 keyed messages; the value carries the key and a global sequence number.
    sent: dict[str, list[int]] = defaultdict(list)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    try:
        for seq in range(N_MESSAGES):
            key = KEYS[seq % len(KEYS)]
            producer.send(topic, key=key.encode(), value=f"{key}:{seq}".encode())
            sent[key].append(seq)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    # Consume them back from the beginning.
    received: dict[str, list[int]] = defaultdict(list)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    count = 0
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        deadline = time.monotonic() + 60
        while count < N_MESSAGES and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    key, seq = record.value.decode().split(":")
                    assert record.key == key.encode()
                    received[key].append(int(seq))
                    partitions_of_key[key].add(tp.partition)
                    count += 1
    finally:
        consumer.close()

    assert count == N_MESSAGES, f"received {count} of {N_MESSAGES} messages"
    # Same messages, and for every key the same order they were produced in.
    assert dict(received) == dict(sent)
    # Each key lives in exactly one partition, and the keys really were spread out.
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert len(set().union(*partitions_of_key.values())) > 1


def test_kafka_local_help_documents_commands() -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "kafka-local.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("start", "stop", "status"):
        assert f"  {command} " in result.stdout, f"--help does not document {command!r}"
