"""consumers.consensus on the real broker: alerts from injected consensus degradations with the
shared lifecycle, and a restart that restores the checkpoint without duplicate alerts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers import consensus
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.checkpoint import CheckpointStore
from stream.kafka import make_admin, make_consumer, make_producer
from stream.records import Alert, decode
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

NODES, LINKS = 8, 2


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Settings]:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t-{uuid.uuid4().hex[:12]}.",
        partitions=2,
        batch_size=500,
        poll_timeout_ms=200,
    )
    ensure_topics(settings)
    yield settings
    with make_admin(settings) as admin:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(settings.topic_prefix)])


def fleet_records(ticks: int) -> list[tuple[bytes, bytes]]:
    fleet = Fleet(
        FleetConfig(
            nodes=NODES,
            links_per_node=LINKS,
            seed=4,
            interval_s=5.0,
            incident_rate=3.0,
            categories=("consensus_degradation",),
        )
    )
    enc = RecordEncoder(fleet.topology)
    out: list[tuple[bytes, bytes]] = []
    for _ in range(ticks):
        s = fleet.step()
        out += zip(enc.keys(s), enc.encode(enc.records(s)), strict=True)
    return out


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    with make_producer(settings) as p:
        for key, value in records:
            p.produce(settings.topic("telemetry"), value, key)
        p.flush(30)


def read_alerts(settings: Settings) -> list[Alert]:
    consumer = make_consumer(
        settings, [settings.topic("alerts")], group_id=f"r-{uuid.uuid4().hex}", from_beginning=True
    )
    got = []
    try:
        empty = 0
        while empty < 10:
            batch = consumer.poll_batch(2000, 200)
            empty = 0 if batch else empty + 1
            got += [decode(m.value, Alert) for m in batch]
    finally:
        consumer.close()
    return got


def run(settings: Settings, state: Path) -> int:
    return consensus.main(
        [
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--group-id",
            "cons-test",
            "--state-dir",
            str(state),
            "--from-beginning",
            "--idle-timeout",
            "4",
            "--window",
            "10",
            "--units",
            "8",
            "--warmup-windows",
            "1200",
            "--retrain-every",
            "1500",
            "--fit-batch",
            "32",
        ]
    )


def test_alerts_and_restart_from_checkpoint(topics: Settings, tmp_path: Path) -> None:
    ticks = 1000
    records = fleet_records(ticks)
    cut = 600 * NODES * LINKS
    produce(topics, records[:cut])
    assert run(topics, tmp_path) == 0
    store = CheckpointStore(tmp_path, "consensus-cons-test")
    assert store.versions()
    _sampler, det1, _tracker = store.load()[0]["state"]
    # the warm-up fit ran beside the stream and was swapped in by the final checkpoint at the
    # latest (a short backlog is read before it is done): the checkpoint holds a fitted model
    assert det1.version_ >= 1 and det1.retrains_[0]["reason"] == "warm-up"

    produce(topics, records[cut:])
    assert run(topics, tmp_path) == 0
    alerts = read_alerts(topics)
    assert any(a.status == "open" for a in alerts)
    assert {a.source for a in alerts} == {"consensus-ae"}
    assert {a.category for a in alerts} == {"consensus_degradation"}
    assert len({a.alert_id for a in alerts}) == len(alerts)  # no duplicates across the restart
    _sampler, det2, _tracker = store.load()[0]["state"]
    # the second run continued the restored detector: samples add up, versions keep counting
    assert det2.samples_ >= ticks * NODES - 2 * NODES and det2.version_ >= det1.version_
