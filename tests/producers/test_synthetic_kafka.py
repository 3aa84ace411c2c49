"""The synthetic producer on the real local broker: complete, per-node ordered, labels too."""

from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from producers.synthetic import main
from stream.records import IncidentLabel, decode
from stream.settings import TOPICS

COUNT = 6000
ARGS = "--nodes 12 --interval 10 --seed 7 --incident-rate 5 --rate 0 --progress-interval 0".split()
ARGS += ["--count", str(COUNT)]


def consume(bootstrap: str, topic: str, expected: int, group_id: str) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    out: list = []
    try:
        deadline = time.monotonic() + 60
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                out += records
        # nothing beyond the expected records (no duplicates from retries)
        for records in consumer.poll(timeout_ms=1000).values():
            out += records
    finally:
        consumer.close()
    return out


def by_node(lines: list[bytes]) -> dict[bytes, list[bytes]]:
    seqs: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for line in lines:
        node = line.split(b'"node_id":"', 1)[1].split(b'"', 1)[0]
        seqs[node].append(line)
    return seqs


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_records_arrive_complete_and_in_node_order(
    kafka_bootstrap: str, tmp_path: Path, group_id: str, backend: str
):
    # The same options to a file: the reference stream (same seed -> same bytes).
    ref = tmp_path / "ref.jsonl"
    assert main(["--output", str(ref), *ARGS]) == 0
    expected = ref.read_bytes().splitlines()
    expected_labels = (tmp_path / "ref.labels.jsonl").read_bytes().splitlines()
    assert expected_labels

    prefix = f"test-{uuid.uuid4().hex}."
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="pytest-synthetic")
    try:
        labels_file = tmp_path / "kafka.labels.jsonl"
        assert (
            main(
                [
                    *ARGS,
                    "--bootstrap-servers",
                    kafka_bootstrap,
                    "--topic-prefix",
                    prefix,
                    "--backend",
                    backend,
                    "--labels-output",
                    str(labels_file),
                ]
            )
            == 0
        )
        assert labels_file.read_bytes().splitlines() == expected_labels

        got = consume(kafka_bootstrap, prefix + "telemetry", COUNT, group_id)
        assert len(got) == COUNT
        partitions = collections.defaultdict(set)
        for m in got:
            assert m.value.split(b'"node_id":"', 1)[1].startswith(m.key + b'"')  # keyed by node
            partitions[m.key].add(m.partition)
        assert all(len(p) == 1 for p in partitions.values())  # one node, one partition
        assert len(set().union(*partitions.values())) > 1
        # Per node: exactly the reference records, in the same (event-time) order.
        assert by_node([m.value for m in got]) == by_node(expected)

        labels = consume(
            kafka_bootstrap, prefix + "labels", len(expected_labels), group_id + "-labels"
        )
        assert sorted(m.value for m in labels) == sorted(expected_labels)
        for m in labels:
            assert decode(m.value, IncidentLabel).node_id.encode() == m.key
    finally:
        try:
            admin.delete_topics([prefix + t for t in TOPICS])
        except Exception as exc:  # best effort: a leftover uuid topic harms nobody
            print(f"warning: could not delete test topics {prefix}*: {exc!r}")
        admin.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_producer_serves_its_counts_and_health_while_it_runs(kafka_bootstrap: str) -> None:
    import socket
    import threading
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = f"t-{uuid.uuid4().hex[:12]}."
    argv = [*ARGS[:-2], "--count", "20000", "--rate", "5000", "--bootstrap-servers",
            kafka_bootstrap, "--topic-prefix", prefix, "--backend", "confluent",
            "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]  # fmt: skip
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(main(argv)), daemon=True)
    t.start()
    seen: list[float] = []
    try:
        while t.is_alive() and len(seen) < 3:
            time.sleep(0.7)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                    text = r.read().decode()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
                    assert r.status == 200
            except OSError:
                continue  # not serving yet (topics being created) or just stopped
            for fam in text_string_to_metric_families(text):
                for smp in fam.samples:
                    if smp.name == "dwcp_records_produced_total" and smp.labels["topic"] == f"{prefix}telemetry":
                        seen.append(smp.value)
    finally:
        t.join(60)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([x for x in admin.list_topics() if x.startswith(prefix)])
        finally:
            admin.close()
    assert rc == [0]
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] > seen[0] > 0, seen
