"""Event-time order: the aligner's rules, and a 6-partition backlog on the real broker handed
to the processors in exactly the order a file gives (without alignment it jumps back by minutes)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from stream.alignment import Aligner
from stream.kafka import make_producer
from stream.loop import run_consumer


def rows(part: str, times: list[float | None], key: str = "k", first: int = 0) -> list:
    return [(part, first + i, f"{part}{first + i}", t, key) for i, t in enumerate(times)]


def test_the_order_depends_only_on_the_records_not_on_the_partitioning() -> None:
    # the same 12 records (4 keys, 3 rounds, keys out of order within a round) as one
    # partition (a file) and spread over three partitions by key: the same sequence
    recs = [(t + dt, key) for t in (0, 10, 20) for key, dt in (("b", 3), ("a", 7), ("d", 1), ("c", 3))]
    one = Aligner(allowed_lateness_s=10)
    one.add([("file", i, (ts, k), ts, k) for i, (ts, k) in enumerate(recs)], now_ms=0)
    got_one = [item for item, _ in one.release(100, now_ms=0, flush=True)]
    three = Aligner(allowed_lateness_s=10)
    three.assign(["p0", "p1", "p2"], now_ms=0)
    by_part: dict[str, list] = {}
    for ts, k in recs:
        by_part.setdefault({"a": "p0", "b": "p1", "c": "p1", "d": "p2"}[k], []).append((ts, k))
    got_three = []
    for part in ("p2", "p0", "p1"):  # whole partitions, one after the other: a backlog
        three.add([(part, i, (ts, k), ts, k) for i, (ts, k) in enumerate(by_part[part])], now_ms=0)
        got_three += [item for item, _ in three.release(100, now_ms=0)]
    got_three += [item for item, _ in three.release(100, now_ms=0, flush=True)]
    assert got_one == got_three == sorted(recs)
    assert one.late == three.late == 0


def test_records_wait_until_every_partition_is_past_them_by_the_lateness() -> None:
    a = Aligner(idle_ms=1000, allowed_lateness_s=5)
    a.assign(["p0", "p1"], now_ms=0)
    a.add(rows("p0", [1, 4, 20]), now_ms=0)
    assert a.release(10, now_ms=0) == []  # p1 has delivered nothing: it may bring anything
    a.add(rows("p1", [2, 9]), now_ms=10)
    # p0 is past 15, p1 past 4: records before 4 may go, in event-time order
    assert [i for i, _ in a.release(10, now_ms=10)] == ["p00", "p10"]
    assert a.commit_offsets() == {"p0": 1, "p1": 1}
    a.add(rows("p1", [30], first=2), now_ms=20)
    assert [i for i, _ in a.release(10, now_ms=20)] == ["p01", "p11"]  # now below 15
    assert a.late == 0 and len(a) == 2


def test_an_idle_partition_stops_holding_the_others_back_and_the_stall_is_measured() -> None:
    a = Aligner(idle_ms=500, allowed_lateness_s=0)
    a.assign(["p0", "p1"], now_ms=0)
    a.add(rows("p0", [5.0, 6.0]), now_ms=0)
    assert a.release(10, now_ms=100) == []  # p1 may still bring something earlier
    assert a.release(10, now_ms=400) == []
    a.add(rows("p0", [9.0], first=2), now_ms=550)  # p0 goes on delivering
    assert [i for i, _ in a.release(10, now_ms=600)] == ["p00", "p01"]  # p1 idle after 500 ms
    assert a.stalled_ms == pytest.approx(500.0)
    assert [i for i, _ in a.release(10, now_ms=1100)] == ["p02"]  # all idle: the end
    b = Aligner(idle_ms=500, allowed_lateness_s=0)
    b.assign(["p0", "p1"], now_ms=0)
    b.add(rows("p0", [5.0, 6.0]), now_ms=0)  # p1 at its log end with nothing: no wait
    assert [i for i, _ in b.release(10, now_ms=0, caught_up={"p1"})] == ["p00"]


def test_waits_while_the_broker_is_unreachable_do_not_make_a_partition_idle() -> None:
    # the broker stops with the tails of two partitions buffered: an outage is not idleness,
    # and after it every partition waits idle_ms again for its producer to come back
    a = Aligner(idle_ms=500, allowed_lateness_s=0)
    a.assign(["p0", "p1"], now_ms=0)
    a.add(rows("p0", [5.0, 8.0]) + rows("p1", [6.0]), now_ms=0)
    assert [i for i, _ in a.release(10, now_ms=0)] == ["p00"]  # below p1's 6
    for now in (300, 900, 1500):  # unreachable for 1.5 s of polls
        a.wait_again(now)
        assert a.release(10, now_ms=now) == []
    assert a.release(10, now_ms=1900) == []  # back, and not yet idle_ms since
    a.add(rows("p1", [7.0], first=1), now_ms=1950)  # p1's producer is back
    assert [i for i, _ in a.release(10, now_ms=1950)] == ["p10"]
    assert [i for i, _ in a.release(10, now_ms=2500)] == ["p11", "p01"]  # quiet now: the end
    assert a.late == 0


def test_late_records_are_released_at_once_and_counted() -> None:
    a = Aligner(idle_ms=1000, allowed_lateness_s=10)
    a.add(rows("p0", [1000.0, 1020.0]), now_ms=0)
    assert [i for i, _ in a.release(10, now_ms=1)] == ["p00"]
    a.add([("p1", 0, "late", 900.0, "k"), ("p1", 1, "ok", 1005.0, "k")], now_ms=1)
    assert [i for i, _ in a.release(10, now_ms=2, flush=True)] == ["late", "ok", "p01"]
    assert a.late == 1 and a.watermark == 1020.0


def test_a_record_without_event_time_keeps_its_place_and_offsets_are_committed_in_order() -> None:
    a = Aligner(idle_ms=1000, allowed_lateness_s=0)
    a.add(rows("p0", [10.0, None, 30.0]), now_ms=0)
    a.add(rows("p1", [20.0]), now_ms=0)
    assert [i for i, _ in a.release(10, now_ms=0)] == ["p00", "p01"]  # below 20
    assert a.commit_offsets() == {"p0": 2, "p1": 0}  # p1's record is still buffered


def test_positions_let_a_restart_skip_what_was_handed_on() -> None:
    a = Aligner(idle_ms=1000, allowed_lateness_s=0)
    a.assign(["p0", "p1"], now_ms=0)
    a.add([("p0", 0, "x0", 50.0, "x"), ("p0", 1, "y0", 10.0, "y"), ("p0", 2, "x1", 60.0, "x")], 0)
    a.add(rows("p1", [55.0]), now_ms=0)
    assert [i for i, _ in a.release(10, now_ms=0)] == ["y0", "x0"]  # below 55
    assert a.positions() == {"p0": (2, []), "p1": (0, [])}
    b = Aligner(idle_ms=1000, allowed_lateness_s=0)
    b.add([("p0", 0, "y", 10.0, "y"), ("p0", 1, "x", 50.0, "x"), ("p0", 2, "z", 40.0, "z")], 0)
    assert [i for i, _ in b.release(10, now_ms=0)] == ["y", "z"]  # out of offset order
    assert b.positions() == {"p0": (1, [2])}
    c = Aligner(idle_ms=1000, allowed_lateness_s=0)  # a restart from that checkpoint
    c.skip("p0", [2])
    c.add([("p0", 1, "x", 50.0, "x"), ("p0", 2, "z", 40.0, "z")], 0)
    assert [i for i, _ in c.release(10, now_ms=0, flush=True)] == ["x"]
    assert c.commit_offsets() == {"p0": 3}


def test_full_buffers_ask_for_a_pause_except_the_one_holding_the_watermark() -> None:
    a = Aligner(idle_ms=1000, max_queued=4, allowed_lateness_s=100)
    a.add(rows("p0", [float(i) for i in range(4)]), now_ms=0)
    a.add(rows("p1", [float(i) for i in range(50, 54)]), now_ms=0)
    a.release(10, now_ms=0)
    assert a.to_pause() == ["p1"]  # p0 decides what goes: it must keep fetching
    a.forget(["p0", "p1"])
    assert len(a) == 0 and a.commit_offsets() == {}


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
    seen: list[tuple[float, str]] = []

    def handler(batch):
        seen.extend((rec.timestamp.timestamp(), rec.node_id) for _m, rec in batch)
        return []

    stats = run_consumer(
        kafka_settings,
        [topic],
        handler,
        group_id=f"g-{uuid.uuid4().hex}",
        from_beginning=True,
        install_signals=False,
        max_batch=500,
        poll_timeout_ms=200,
        idle_timeout=8,
        aligner=Aligner(idle_ms=5000, allowed_lateness_s=5, max_queued=1000) if align else None,
    )
    expected = sorted((1767571200.0 + t, f"n-{n:02d}") for t in range(steps) for n in range(nodes))
    if align:
        # exactly the records, once each, in (event time, node) order: what a file gives
        assert seen == expected
        assert stats.late_records == 0
    else:
        # at least once: a rebalance while joining (a new topic's metadata) may repeat a batch
        assert stats.records_in >= nodes * steps and set(seen) == set(expected)
        back = max(b[0] - a[0] for a, b in zip(seen[1:], seen, strict=False))
        assert back > 60, back  # one partition's minutes, then the next one's


@pytest.mark.fault
def test_a_record_far_ahead_is_an_outlier_unless_the_next_ones_confirm_the_jump() -> None:
    a = Aligner(idle_ms=1000, allowed_lateness_s=0, max_jump_s=300, confirm=3,
                reject=lambda item, why: ("rejected", item, why))  # fmt: skip
    a.add(rows("p0", [100.0, 110.0]), now_ms=0)
    a.add([("p0", 2, "poison", 3700.0, "k")], now_ms=0)  # one hour ahead
    a.add(rows("p0", [120.0, 130.0], first=3), now_ms=0)  # the stream goes on: an outlier
    got = a.release(10, now_ms=0, flush=True)
    assert [i if isinstance(i, str) else i[:2] for i, _ in got] == [
        "p00", "p01", ("rejected", "poison"), "p03", "p04"]  # fmt: skip
    assert "3,590 s ahead of its partition's newest record" in got[2][0][2]
    assert a.rejected == 1 and a.watermark == 130.0 and a.commit_offsets() == {"p0": 5}
    # a gap in the data: the records after the jump agree with it, nothing is rejected
    b = Aligner(idle_ms=1000, allowed_lateness_s=0, max_jump_s=300, confirm=3)
    b.add(rows("p0", [100.0, 110.0, 5000.0, 5010.0, 5020.0, 5030.0]), now_ms=0)
    assert [i for i, _ in b.release(10, now_ms=0, flush=True)] == [f"p0{i}" for i in range(6)]
    assert b.rejected == 0
    # live: a record stamped beyond the wall clock is rejected at once
    c = Aligner(idle_ms=1000, max_future_s=600, reject=lambda item, why: why)
    c.add([("p0", 0, "x", 10_000.0, "k")], now_ms=0, wall_s=1_000.0)
    assert c.release(10, now_ms=0, flush=True) == [("event time 9,000 s ahead of the wall clock", float("-inf"))]
