"""Unit tests of the batch loop's bookkeeping, with in-memory fake clients (no Kafka)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping, Sequence

import orjson
import pytest

from consumers.ingest import IngestState
from stream.deadletters import dead_letter_reason
from stream.errors import CommitError
from stream.kafka.base import Consumer, Message, Producer, TopicPartition
from stream.loop import BatchLoop, Output
from stream.records import DeadLetter, FieldError, decode
from stream.shutdown import handle_signals
from stream.validation import validate_telemetry

GOOD = orjson.dumps({"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-1", "rtt_ms": 3.0})


class FakeConsumer(Consumer):
    def __init__(self, batches: Sequence[Sequence[Message]], fail_commits: int = 0) -> None:
        self.batches = [list(b) for b in batches]
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_commits = fail_commits
        self.assigned = {(m.topic, m.partition) for b in batches for m in b}
        self.closed = False

    def poll_batch(self, max_records: int, timeout_ms: int) -> list[Message]:
        if not self.batches:
            return []
        batch = self.batches[0][:max_records]
        self.batches[0] = self.batches[0][max_records:]
        if not self.batches[0]:
            self.batches.pop(0)
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise CommitError("rebalance in progress")
        self.commits.append(dict(offsets))

    def committed(self, partitions):
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def close(self) -> None:
        self.closed = True


class FakeProducer(Producer):
    def __init__(self) -> None:
        self.queued: list[tuple[str, bytes, bytes | None]] = []
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.closed = False

    def produce(self, topic, value, key=None, headers=None) -> None:
        self.queued.append((topic, value, key))

    def flush(self, timeout=None) -> None:
        self.sent += self.queued
        self.queued = []

    def close(self) -> None:
        self.closed = True


def msg(partition: int, offset: int, value: bytes = GOOD, key: bytes | None = b"n-1") -> Message:
    return Message("telemetry", partition, offset, key, value, 0)


def loop(consumer, producer=None, handler=None, **kw) -> BatchLoop:
    kw.setdefault("idle_timeout", 0.05)
    kw.setdefault("poll_timeout_ms", 1)
    return BatchLoop(
        consumer, producer or FakeProducer(), handler, dead_letter_topic="dlq", group_id="g", **kw
    )


def test_commits_max_offset_plus_one_per_partition_after_flush():
    consumer = FakeConsumer([[msg(0, 5), msg(1, 7), msg(0, 6), msg(1, 8), msg(2, 0)]])
    producer = FakeProducer()
    flushed_at_commit = []
    consumer.commit = lambda offsets: flushed_at_commit.append(
        (dict(offsets), list(producer.queued))
    )  # type: ignore[method-assign]

    stats = loop(
        consumer, producer, lambda recs: [Output("out", m.key, b"x") for m, _ in recs]
    ).run()

    assert flushed_at_commit == [
        ({("telemetry", 0): 7, ("telemetry", 1): 9, ("telemetry", 2): 1}, [])
    ]
    assert len(producer.sent) == 5 and stats.outputs == 5 and stats.records_in == 5
    assert consumer.closed and producer.closed


def test_bad_records_become_dead_letters_and_are_committed_too():
    batch = [
        msg(0, 0),
        msg(0, 1, b"{not json", key=b"k-bad"),
        msg(0, 2, b'{"node_id": "n-1"}', key=None),
    ]
    consumer, producer = FakeConsumer([batch]), FakeProducer()
    seen = []

    stats = loop(consumer, producer, lambda recs: seen.extend(recs)).run()

    assert [m.offset for m, _ in seen] == [0] and stats.dead_letters == 2
    letters = [(t, decode(v, DeadLetter), k) for t, v, k in producer.sent]
    assert [(t, k) for t, _, k in letters] == [("dlq", b"k-bad"), ("dlq", None)]
    first, second = letters[0][1], letters[1][1]
    assert first.reason.startswith("not valid JSON") and first.original == b"{not json"
    assert (first.source_topic, first.partition, first.offset, first.consumer) == (
        "telemetry",
        0,
        1,
        "g",
    )
    assert second.reason == "timestamp: required field is missing or null"
    assert consumer.commits == [{("telemetry", 0): 3}]


def test_a_decoder_that_raises_dead_letters_the_record():
    def decoder(value: bytes):
        if value == b"boom":
            raise RuntimeError("kaput")
        return validate_telemetry(value)

    producer = FakeProducer()
    stats = loop(FakeConsumer([[msg(0, 0, b"boom"), msg(0, 1)]]), producer, decoder=decoder).run()

    assert stats.dead_letters == 1
    assert decode(producer.sent[0][1], DeadLetter).reason == "decoder raised RuntimeError: kaput"


def test_a_handler_error_produces_and_commits_nothing_and_skips_on_close():
    consumer, producer, closed = FakeConsumer([[msg(0, 0), msg(0, 1, b"bad")]]), FakeProducer(), []

    def handler(recs):
        raise ValueError("model exploded")

    with pytest.raises(ValueError, match="model exploded") as err:
        loop(consumer, producer, handler, on_close=lambda: closed.append(1)).run()

    assert producer.sent == [] and producer.queued == [] and consumer.commits == []
    assert closed == [] and consumer.closed and producer.closed
    assert "telemetry[0] 0..1 (offsets not committed)" in err.value.__notes__[0]


def test_a_refused_commit_is_retried_for_partitions_still_assigned():
    consumer = FakeConsumer([[msg(0, 0), msg(1, 0)], [msg(0, 1)]], fail_commits=1)
    consumer.assigned = {("telemetry", 0)}  # partition 1 was taken away meanwhile

    stats = loop(consumer, max_batch=2).run()

    assert consumer.commits == [{("telemetry", 0): 2}]
    assert stats.commit_failures == 1 and stats.commits == 1


def test_max_records_stops_exactly_and_leaves_the_rest():
    consumer = FakeConsumer([[msg(0, i) for i in range(10)]])

    stats = loop(consumer, max_batch=3, max_records=7, idle_timeout=None).run()

    assert stats.records_in == 7 and stats.stop_reason == "max_records=7 reached"
    assert consumer.commits[-1] == {("telemetry", 0): 7} and len(consumer.batches[0]) == 3


def test_stop_finishes_the_batch_commits_then_calls_on_close_once():
    events = []
    consumer = FakeConsumer([[msg(0, 0), msg(0, 1)], [msg(0, 2)]])
    the_loop = loop(consumer, idle_timeout=None, on_close=lambda: events.append("close"))

    def handler(recs):
        the_loop.stop()  # as a signal handler would, mid-batch
        events.append(f"handled {len(recs)}")

    the_loop.handler = handler
    stats = the_loop.run()

    assert events == ["handled 2", "close"]
    assert consumer.commits == [{("telemetry", 0): 2}] and stats.stop_reason == "stop requested"


def test_progress_is_reported_with_stats():
    reports = []
    consumer = FakeConsumer([[msg(0, 0), msg(0, 1, b"x")]])

    loop(consumer, on_progress=lambda s: reports.append((s.records_in, s.dead_letters))).run()

    assert reports[-1] == (2, 1)


def test_dead_letter_reason_lists_the_first_reasons():
    errors = [FieldError(field=f"f{i}", reason="bad") for i in range(5)]
    assert dead_letter_reason(errors) == "f0: bad; f1: bad; f2: bad (+2 more)"


def test_first_signal_requests_a_stop_second_interrupts_and_handlers_are_restored():
    stops = []
    before = signal.getsignal(signal.SIGTERM)
    with handle_signals(lambda: stops.append(1)):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops == [1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_are_left_alone_outside_the_main_thread():
    before, errors = signal.getsignal(signal.SIGTERM), []

    def run():
        try:
            with handle_signals(lambda: None):
                errors.append(signal.getsignal(signal.SIGTERM) is before)
        except Exception as exc:  # pragma: no cover - would be the bug
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == [True]


def test_ingest_counts_out_of_order_samples_per_node():
    state = IngestState()
    recs = [
        validate_telemetry(orjson.dumps({"timestamp": f"2026-01-05T10:00:0{s}Z", "node_id": n}))[0]
        for n, s in [("a", 1), ("a", 3), ("a", 2), ("b", 5), ("a", 1), ("b", 6)]
    ]
    assert state.handle([(msg(0, i), r) for i, r in enumerate(recs)]) == []
    assert state.nodes == 2 and state.out_of_order == {"a": 2} and state.max_out_of_order == 2
