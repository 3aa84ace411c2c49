"""The client layer on the real broker, each test over both backends."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict

import pytest

from stream.errors import DeliveryError, SettingsError
from stream.kafka import Message, make_consumer, make_producer
from stream.settings import Settings


def _join(consumer, timeout: float = 30.0) -> list[Message]:
    """Poll until the consumer has an assignment; returns what it read meanwhile."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        got += consumer.poll_batch(100, 200)
    assert consumer.assignment(), "consumer never got an assignment"
    return got


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_round_trip_keeps_keys_headers_and_per_key_order(
    kafka_settings, topic_factory, produce_records, read_topic
):
    topic = topic_factory(partitions=3)
    records = [
        (
            f"n-{i % 10:03d}".encode(),
            f'{{"seq": {i}}}'.encode(),
            [("seq", str(i).encode()), ("src", b"test")],
        )
        for i in range(300)
    ]
    produce_records(kafka_settings, topic, records)

    got = read_topic(kafka_settings, topic, 300)

    assert len(got) == 300
    by_key: dict[bytes, list[Message]] = defaultdict(list)
    for m in got:
        assert m.topic == topic and m.timestamp_ms > 0
        assert dict(m.headers)["src"] == b"test"
        assert m.value == f'{{"seq": {int(dict(m.headers)["seq"])}}}'.encode()
        by_key[m.key].append(m)
    assert len(by_key) == 10
    for msgs in by_key.values():
        assert len({m.partition for m in msgs}) == 1  # one key, one partition
        msgs.sort(key=lambda m: m.offset)
        seqs = [int(dict(m.headers)["seq"]) for m in msgs]
        assert seqs == sorted(seqs)  # produce order kept per key


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_both_backends_put_a_key_on_the_same_partition(kafka_bootstrap, topic_factory, read_topic):
    topic = topic_factory(partitions=6)
    keys = [f"n-{i:03d}".encode() for i in range(40)]
    for backend in ("kafka-python", "confluent"):
        with make_producer(
            Settings(bootstrap_servers=kafka_bootstrap, backend=backend)
        ) as producer:
            for key in keys:
                producer.produce(topic, backend.encode(), key)
            producer.flush(30)

    got = read_topic(Settings(bootstrap_servers=kafka_bootstrap), topic, 80)

    partition = defaultdict(set)
    for m in got:
        partition[m.key].add(m.partition)
    assert len(got) == 80
    assert all(len(p) == 1 for p in partition.values()), "murmur2 keying differs between backends"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_broker_rejection_surfaces_as_delivery_error_at_flush(kafka_settings, topic_factory):
    topic = topic_factory(partitions=1)
    big = os.urandom(2 * 1024 * 1024)  # incompressible, over the broker's 1 MiB message.max.bytes
    client_limit = (
        {"max_request_size": 8 << 20}
        if kafka_settings.backend == "kafka-python"
        else {"message.max.bytes": 8 << 20}
    )
    with make_producer(kafka_settings, **client_limit) as producer:
        producer.produce(topic, b"small")
        producer.produce(topic, big)
        with pytest.raises(DeliveryError, match=r"record\(s\) failed delivery"):
            producer.flush(30)
        producer.flush(30)  # a failure is reported once

    with make_producer(kafka_settings) as producer, pytest.raises(DeliveryError, match=topic):
        producer.produce(topic, big)  # over the client's own limit: refused at once


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_explicit_commit_sets_the_group_position(
    kafka_settings, topic_factory, group_id, produce_records, read_topic
):
    topic = topic_factory(partitions=2)
    produce_records(kafka_settings, topic, [(f"k{i}".encode(), str(i).encode()) for i in range(40)])
    consumer = make_consumer(kafka_settings, [topic], group_id=group_id, from_beginning=True)
    try:
        got = _join(consumer)
        while len(got) < 40:
            got += consumer.poll_batch(100, 200)
        first = {(m.topic, m.partition): m for m in got if m.offset == 0}
        assert consumer.committed(sorted(first)) == {
            tp: 0 for tp in first
        }  # start pinned on assign
        consumer.commit({tp: 1 for tp in first})  # only offset 0 of each partition is done
        assert consumer.committed(sorted(first)) == {tp: 1 for tp in first}
    finally:
        consumer.close()

    again = read_topic(kafka_settings, topic, 38, group_id=group_id, from_beginning=False)
    assert len(again) == 38 and min(m.offset for m in again) == 1


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_on_revoke_runs_before_partitions_move_and_on_close(
    kafka_settings, topic_factory, group_id
):
    topic = topic_factory(partitions=2)
    events: list[tuple[str, str, list]] = []

    def consumer(name: str):
        return make_consumer(
            kafka_settings,
            [topic],
            group_id=group_id,
            on_assign=lambda ps: events.append((name, "assign", ps)),
            on_revoke=lambda ps: events.append((name, "revoke", ps)),
        )

    # each member polls back to back in its own thread, as a deployed member does (members
    # polled in turn from one thread are each outside poll() half the time: see
    # test_a_member_busy_between_short_polls_still_joins_once)
    sizes: dict[str, int] = {}
    stop = threading.Event()

    def pump(name: str, c) -> None:  # type: ignore[no-untyped-def]
        while not stop.is_set():
            c.poll_batch(10, 100)
            sizes[name] = len(c.assignment())

    def wait_for(sized: dict[str, int]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(sizes.get(n) != k for n, k in sized.items()):
            time.sleep(0.05)

    first = consumer("first")
    second = None
    threads = [threading.Thread(target=pump, args=("first", first), daemon=True)]
    try:
        threads[0].start()
        wait_for({"first": 2})
        second = consumer("second")
        threads.append(threading.Thread(target=pump, args=("second", second), daemon=True))
        threads[1].start()
        wait_for({"first": 1, "second": 1})
        stop.set()
        for t in threads:
            t.join(30)
        assert len(first.assignment()) == 1 and len(second.assignment()) == 1
        revoked = events.index(("first", "revoke", [(topic, 0), (topic, 1)]))
        second_assigned = next(
            i for i, e in enumerate(events) if e[:2] == ("second", "assign") and e[2]
        )
        assert revoked < second_assigned  # the old owner let go before the new one started
        kept, before_close = sorted(first.assignment()), len(events)
        first.close()
        assert [e for e in events[before_close:] if e[0] == "first"] == [("first", "revoke", kept)]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        first.close()
        if second is not None:
            second.close()


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_member_busy_between_short_polls_still_joins_once(
    kafka_settings, topic_factory, group_id
):
    # the join finishes while the member is outside poll(): kafka-python 3.0.12 threw that
    # answer away and joined again, forever (no partitions after 15 s, generation 13)
    topic = topic_factory(partitions=3)
    assigned: list[list] = []
    consumer = make_consumer(
        kafka_settings, [topic], group_id=group_id, on_assign=lambda ps: assigned.append(ps)
    )
    try:
        for _ in range(15):
            consumer.poll_batch(10, 5)
            if consumer.assignment():
                break
            time.sleep(1.0)
        assert consumer.assignment() == {(topic, p) for p in range(3)}
        for _ in range(3):  # a rebalance loop would revoke and assign again
            consumer.poll_batch(10, 5)
            time.sleep(1.0)
        assert [ps for ps in assigned if ps] == [[(topic, p) for p in range(3)]]
    finally:
        consumer.close()


def test_unknown_config_keys_fail_fast_with_the_key(backend):
    settings = Settings(backend=backend)
    with pytest.raises(SettingsError, match="lingerr"):
        make_producer(settings, lingerr_ms=5)
    with pytest.raises(SettingsError, match="auto"):
        make_consumer(settings, ["t"], group_id=f"g-{uuid.uuid4().hex}", enable_auto_commit=True)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_new_group_pins_its_start_so_a_restart_skips_nothing(
    kafka_settings, topic_factory, group_id, produce_records, read_topic
):
    topic = topic_factory(partitions=3)
    produce_records(kafka_settings, topic, [(f"old-{i}".encode(), b"old") for i in range(9)])
    consumer = make_consumer(kafka_settings, [topic], group_id=group_id)  # starts at the end
    try:
        assert _join(consumer) == []
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and None in consumer.committed([(topic, p) for p in range(3)]).values()
        ):
            consumer.poll_batch(10, 100)
        ends = consumer.committed([(topic, p) for p in range(3)])
    finally:
        consumer.close()  # nothing read, nothing committed by the caller
    produce_records(kafka_settings, topic, [(f"new-{i}".encode(), b"new") for i in range(12)])

    again = read_topic(kafka_settings, topic, 12, group_id=group_id, from_beginning=False)

    assert sum(ends.values()) == 9
    assert sorted(m.value for m in again) == [b"new"] * 12  # neither skipped nor the old ones


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_admin_reports_consumer_lag_per_partition(
    kafka_settings, topic_factory, group_id, produce_records
):
    from stream.kafka import make_admin

    topic = topic_factory(partitions=2)
    produce_records(kafka_settings, topic, [(f"k{i}".encode(), str(i).encode()) for i in range(30)])
    with make_admin(kafka_settings) as admin:
        offsets = admin.partition_offsets(topic)
        assert sorted(offsets) == [0, 1] and sum(e - s for s, e in offsets.values()) == 30
        assert admin.consumer_lag(group_id, topic) == {p: e for p, (_s, e) in offsets.items()}
        assert admin.partition_offsets(f"{topic}-missing") == {}
        consumer = make_consumer(kafka_settings, [topic], group_id=group_id, from_beginning=True)
        try:
            _join(consumer)
            consumer.commit({(topic, 0): offsets[0][1], (topic, 1): 1})  # p0 done, p1 one record
        finally:
            consumer.close()
        assert admin.group_offsets(group_id, topic) == {0: offsets[0][1], 1: 1}
        assert admin.consumer_lag(group_id, topic) == {0: 0, 1: offsets[1][1] - 1}


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_poll_returns_the_records_there_without_waiting_for_a_full_batch(
    kafka_settings, topic_factory, group_id, produce_records
):
    # the contract: up to max_records, waiting at most timeout_ms *for the first*. librdkafka's
    # consume(n, timeout) waits for all n or the whole timeout, which held every batch (and
    # every alert) for the poll timeout whenever fewer records than a batch were on their way
    topic = topic_factory(partitions=1)
    consumer = make_consumer(kafka_settings, [topic], group_id=group_id, from_beginning=True)
    try:
        assert _join(consumer) == []
        produce_records(kafka_settings, topic, [(b"k", str(i).encode()) for i in range(10)])
        got: list[Message] = []
        polls: list[float] = []
        deadline = time.monotonic() + 30
        while len(got) < 10 and time.monotonic() < deadline:
            t0 = time.monotonic()
            batch = consumer.poll_batch(5000, 8000)
            if batch:
                polls.append(time.monotonic() - t0)
            got += batch
        assert sorted(int(m.value) for m in got) == list(range(10))
        # each poll that delivered came back long before its 8 s timeout
        assert polls and max(polls) < 4.0, polls
    finally:
        consumer.close()
