"""Event-time alignment: the aligner's rules, and a 6-partition backlog on the real broker
handed to the processors in event-time order (without alignment it jumps back by hours)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from stream.alignment import Aligner
from stream.kafka import make_consumer, make_producer
from stream.loop import BatchLoop


def test_releases_merge_partitions_by_event_time_and_keep_partition_order() -> None:
    a = Aligner(idle_ms=0)
    a.add([("p0", f"a{i}", float(t)) for i, t in enumerate([1, 4, 7])], now_ms=0)
    a.add([("p1", f"b{i}", float(t)) for i, t in enumerate([2, 3, 9])], now_ms=0)
    a.add([("p1", "bad", None)], now_ms=0)  # no event time: stays after b2 in p1
    got = [item for item, _ts in a.release(100, now_ms=1)]
    assert got == ["a0", "b0", "b1", "a1", "a2", "b2", "bad"]
    assert a.late == 0 and len(a) == 0


def test_an_empty_partition_holds_the_others_back_until_idle_and_the_stall_is_measured() -> None:
    a = Aligner(idle_ms=500)
    a.assign(["p0", "p1"], now_ms=0)
    a.add([("p0", "x", 5.0)], now_ms=0)
    assert a.release(10, now_ms=100) == []  # p1 may still bring something earlier
    assert a.release(10, now_ms=400) == []
    assert a.release(10, now_ms=600) == [("x", 5.0)]  # p1 idle after 500 ms
    assert a.stalled_ms == pytest.approx(500.0)
    a.add([("p0", "y", 6.0)], now_ms=600)
    assert a.release(10, now_ms=600, caught_up={"p1"}) == [("y", 6.0)]  # at its log end


def test_late_records_are_released_in_order_and_counted() -> None:
    a = Aligner(idle_ms=0, allowed_lateness_s=10)
    a.add([("p0", "new", 1000.0)], now_ms=0)
    assert a.release(10, now_ms=1) == [("new", 1000.0)]
    a.add([("p1", "late", 900.0), ("p1", "ok", 995.0)], now_ms=1)
    assert [i for i, _ in a.release(10, now_ms=2)] == ["late", "ok"]
    assert a.late == 1 and a.watermark == 1000.0


def test_full_queues_ask_for_a_pause_and_drained_ones_for_a_resume() -> None:
    a = Aligner(idle_ms=0, max_queued=4)
    a.add([("p0", i, float(i)) for i in range(4)], now_ms=0)
    assert a.to_pause() == ["p0"]
    a.release(3, now_ms=0)
    assert a.to_pause() == [] and a.to_resume() == ["p0"]
    a.forget(["p0"])
    assert len(a) == 0


def record(node: int, t: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767571200 + t))
    return json.dumps({"timestamp": ts, "node_id": f"n-{node:02d}", "rtt_ms": 1.0}).encode()


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("align", [True, False])
def test_a_six_partition_backlog_reaches_the_handler_in_event_time_order(
    kafka_settings, topic_factory, align: bool
) -> None:
    topic = topic_factory(partitions=6)
    nodes, steps = 24, 250  # 6,000 records, 250 s of event time, every node on its own key
    with make_producer(kafka_settings) as p:
        for t in range(steps):
            for n in range(nodes):
                p.produce(topic, record(n, t), f"n-{n:02d}".encode())
        p.flush(30)
    seen: list[float] = []

    def handler(batch):
        seen.extend(rec.timestamp.timestamp() for _m, rec in batch)
        return []

    loops: list[BatchLoop] = []
    consumer = make_consumer(
        kafka_settings,
        [topic],
        group_id=f"g-{uuid.uuid4().hex}",
        from_beginning=True,
        on_revoke=lambda parts: [lp.forget(parts) for lp in loops],
    )
    loop = BatchLoop(
        consumer,
        make_producer(kafka_settings),
        handler,
        dead_letter_topic=f"{topic}-dl",
        group_id="g",
        max_batch=500,
        poll_timeout_ms=200,
        idle_timeout=8,
        aligner=Aligner(idle_ms=5000, allowed_lateness_s=5, max_queued=1000) if align else None,
    )
    loops.append(loop)
    stats = loop.run()
    # at least once: a rebalance while joining (a new topic's metadata) may repeat a batch
    assert stats.records_in >= nodes * steps and len(seen) >= nodes * steps
    back = max(b - a for a, b in zip(seen[1:], seen, strict=False))  # largest step back in time
    if align:
        assert back <= 5, back  # never further back than the allowed lateness
    else:
        assert back > 60, back  # one partition's minutes, then the next one's
