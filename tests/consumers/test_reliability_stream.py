"""consumers.reliability on the real broker: alerts from injected incidents, dead letters,
checkpoint restore without duplicate alerts."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from consumers import reliability
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.kafka import make_admin, make_consumer, make_producer
from stream.records import Alert, DeadLetter, decode
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


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


def fleet_stream(ticks: int, seed: int = 7) -> tuple[list[tuple[bytes, bytes]], list]:
    """(key, value) telemetry of a small fleet with frequent crashes and disk incidents."""
    fleet = Fleet(
        FleetConfig(
            nodes=6, seed=seed, interval_s=5.0, incident_rate=4.0, categories=("crash", "disk_full")
        )
    )
    enc = RecordEncoder(fleet.topology)
    out: list[tuple[bytes, bytes]] = []
    labels = []
    for _ in range(ticks):
        sample = fleet.step()
        labels += sample.labels
        out += zip(enc.keys(sample), enc.encode(enc.records(sample)), strict=True)
    return out, labels


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    with make_producer(settings) as p:
        for key, value in records:
            p.produce(settings.topic("telemetry"), value, key)
        p.flush(30)


def read_all(settings: Settings, topic: str, idle_s: float = 2.0) -> list[bytes]:
    consumer = make_consumer(
        settings, [topic], group_id=f"r-{uuid.uuid4().hex}", from_beginning=True
    )
    got: list[bytes] = []
    try:
        empty = 0
        while empty < idle_s / 0.2:
            batch = consumer.poll_batch(1000, 200)
            empty = 0 if batch else empty + 1
            got += [m.value for m in batch]
    finally:
        consumer.close()
    return got


def run(settings: Settings, tmp_path, *extra: str, background: bool = False) -> int:
    return reliability.main(
        [
            "--bootstrap-servers", settings.bootstrap_servers,
            "--topic-prefix", settings.topic_prefix,
            "--group-id", "rel-test",
            "--from-beginning",
            "--idle-timeout", "4",
            "--state-dir", str(tmp_path / "state"),
            "--param", f"background={str(background).lower()}",
            *extra,
        ]
    )  # fmt: skip


def test_incidents_raise_alerts_and_bad_records_are_dead_lettered(
    topics: Settings, tmp_path
) -> None:
    records, labels = fleet_stream(480)
    bad = [
        (b"n-001", b"{not json"),
        (b"n-002", b'{"timestamp": "2026-01-05T00:00:00Z", "node_id": "n-002", "rtt_ms": -5}'),
    ]
    produce(topics, records[:2000] + bad + records[2000:])
    # as in production: IsolationForest refits in a worker process (--refit-in process)
    assert run(topics, tmp_path, background=True) == 0

    alerts = [decode(v, Alert) for v in read_all(topics, topics.topic("alerts"))]
    opened = {(a.node_id, a.category) for a in alerts if a.status == "open"}
    crashed = {lab.node_id for lab in labels if lab.category == "crash"}
    assert crashed, "the fixture should inject crashes"
    assert {node for node, cat in opened if cat == "crash"} & crashed
    assert all(a.model_versions.get("iforest") for a in alerts)

    letters = [decode(v, DeadLetter) for v in read_all(topics, topics.topic("dead-letter"))]
    assert sorted(dl.original for dl in letters) == sorted(v for _, v in bad)
    assert all(dl.source_topic == topics.topic("telemetry") for dl in letters)


def test_restart_restores_state_and_does_not_duplicate_alerts(
    topics: Settings, tmp_path, capsys
) -> None:
    records, _ = fleet_stream(480, seed=2)
    produce(topics, records[: len(records) // 2])
    assert run(topics, tmp_path) == 0
    assert "no checkpoint" in capsys.readouterr().err
    produce(topics, records[len(records) // 2 :])
    assert run(topics, tmp_path) == 0
    assert "restored checkpoint" in capsys.readouterr().err

    alerts = [decode(v, Alert) for v in read_all(topics, topics.topic("alerts"))]
    assert alerts
    assert max(Counter(a.alert_id for a in alerts).values()) == 1
    opens = Counter(a.incident_id for a in alerts if a.status == "open")
    assert max(opens.values()) == 1
    # the second run continued the first run's incidents instead of starting from zero
    first_open = {a.incident_id for a in alerts if a.status == "open"}
    assert {a.incident_id for a in alerts if a.status != "open"} <= first_open


def test_background_refits_give_the_same_alerts_every_run_and_the_file_s(
    topics: Settings, tmp_path
) -> None:
    """Issue 16, item 3: four live runs of one topic once published 62, 68, 83 and 94 alerts,
    because a background refit was swapped in whenever it happened to be ready. Now it is
    installed a fixed number of learned records after it starts (``forest_swap_after``)."""
    records, _ = fleet_stream(600, seed=4)
    produce(topics, records)
    fast = ["--param", "forest_refit_every=1500", "--param", "forest_swap_after=400"]
    runs = []
    for i, batch in enumerate(("500", "77")):  # refits in a worker process, other batching
        group = ["--group-id", f"bg-{i}-{uuid.uuid4().hex[:6]}", "--batch-size", batch]
        assert run(topics, tmp_path / f"r{i}", *fast, *group, background=True) == 0
        runs.append(read_all(topics, topics.topic("alerts")))
    first = runs[0]
    assert len(first) > 0 and len(runs[1]) == 2 * len(first)  # both runs published to one topic
    assert sorted(runs[1]) == sorted(first * 2)
    versions = {int(decode(v, Alert).model_versions["iforest"].rsplit("-v")[1]) for v in first}
    assert max(versions) >= 3, versions  # several background refits were swapped in

    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"".join(v + b"\n" for _k, v in records))
    out = tmp_path / "file"
    assert reliability.main(["--from-file", str(path), "--output-dir", str(out), *fast,
                             "--state-dir", str(tmp_path / "fs"), "--no-checkpoint"]) == 0  # fmt: skip
    assert sorted((out / "dwcp.alerts.jsonl").read_bytes().splitlines()) == sorted(first)
