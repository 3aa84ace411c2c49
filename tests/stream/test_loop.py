"""The batch loop on the real broker, over both backends: dead letters and at-least-once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.kafka import make_consumer, make_producer
from stream.loop import BatchLoop, Output, run_consumer
from stream.records import DeadLetter, decode

REPO = Path(__file__).resolve().parents[2]

# (key, raw value, expected reason fragment, fields named in the errors)
BAD = [
    (b"bad-json", b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": ', "not valid JSON", []),
    (
        b"bad-type",
        b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-9", "rtt_ms": "fast"}',
        "rtt_ms: expected a number",
        ["rtt_ms"],
    ),
    (
        b"bad-missing",
        b'{"timestamp": "2026-01-05T10:00:00Z", "rtt_ms": 3}',
        "node_id: required field is missing",
        ["node_id"],
    ),
    (
        b"bad-nan",
        b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-9", "packet_loss": NaN}',
        "packet_loss: NaN is not a finite number",
        ["packet_loss"],
    ),
    (
        b"bad-range",
        b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-9", "packet_loss": 1.5, "cpu_util": -1}',
        "packet_loss: 1.5 is above the maximum 1",
        ["packet_loss", "cpu_util"],
    ),
    (
        b"bad-big",
        b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-9", "region": "'
        + b"x" * 70_000
        + b'"}',
        "over the limit of 65536",
        [],
    ),
]


def echo(settings):
    """A handler that forwards each good record to the alerts topic."""
    return lambda recs: [Output(settings.topic("alerts"), m.key, m.value) for m, _ in recs]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_bad_records_go_to_the_dead_letter_topic_while_good_ones_flow(
    pipeline, group_id, make_telemetry, produce_records, read_topic
):
    good = [(f"n-{i % 4}".encode(), make_telemetry(f"n-{i % 4}", i)) for i in range(40)]
    records = good[:20] + [(k, v) for k, v, *_ in BAD] + good[20:]
    produce_records(pipeline, pipeline.topic("telemetry"), records)

    stats = run_consumer(
        pipeline,
        [pipeline.topic("telemetry")],
        echo(pipeline),
        group_id=group_id,
        from_beginning=True,
        max_records=len(records),
        install_signals=False,
    )

    assert (stats.records_in, stats.dead_letters, stats.outputs) == (46, 6, 40)
    origin = {m.key: m for m in read_topic(pipeline, pipeline.topic("telemetry"), 46)}
    letters = read_topic(pipeline, pipeline.topic("dead-letter"), 6)
    assert sorted(m.key for m in letters) == sorted(k for k, *_ in BAD)
    for m in letters:
        letter = decode(m.value, DeadLetter)
        _key, raw, reason, fields = next(b for b in BAD if b[0] == m.key)
        src = origin[m.key]
        assert reason in letter.reason
        assert [e.field for e in letter.errors if e.field] == fields
        assert letter.original == raw
        assert (letter.source_topic, letter.partition, letter.offset) == (
            src.topic,
            src.partition,
            src.offset,
        )
        assert letter.consumer == group_id and letter.failed_at.tzinfo is not None
    alerts = read_topic(pipeline, pipeline.topic("alerts"), 40)
    assert sorted(m.value for m in alerts) == sorted(v for _, v in good)


def _commit_first(settings, group_id, n):
    """Run the loop over the first ``n`` records so the group has a committed position."""
    run_consumer(
        settings,
        [settings.topic("telemetry")],
        echo(settings),
        group_id=group_id,
        from_beginning=True,
        max_records=n,
        install_signals=False,
    )


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_handler_failure_commits_nothing_so_the_group_rereads(
    pipeline, group_id, make_telemetry, produce_records, read_topic
):
    topic = pipeline.topic("telemetry")
    produce_records(pipeline, topic, [(b"n-1", make_telemetry("n-1", i)) for i in range(10)])
    _commit_first(pipeline, group_id, 10)
    produce_records(pipeline, topic, [(b"n-1", make_telemetry("n-1", i)) for i in range(10, 30)])
    closed = []

    def failing(recs):
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        run_consumer(
            pipeline,
            [topic],
            failing,
            group_id=group_id,
            max_records=20,
            on_close=lambda: closed.append(1),
            install_signals=False,
        )

    assert closed == []
    again = read_topic(pipeline, topic, 20, group_id=group_id, from_beginning=False)
    assert sorted(m.offset for m in again) == list(range(10, 30))  # re-read from the commit
    assert (
        len(read_topic(pipeline, pipeline.topic("alerts"), 10)) == 10
    )  # nothing of the failed batch


class CrashingProducer:
    """Wraps a real producer; the process "dies" when the loop flushes."""

    def __init__(self, inner):
        self.inner = inner

    def produce(self, *args, **kwargs):
        self.inner.produce(*args, **kwargs)

    def flush(self, timeout=None):
        raise SystemExit("killed before flush")

    def close(self):
        self.inner.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_stop_before_flush_commits_nothing(
    pipeline, group_id, make_telemetry, produce_records, read_topic
):
    topic = pipeline.topic("telemetry")
    produce_records(
        pipeline, topic, [(f"n-{i}".encode(), make_telemetry(f"n-{i}", i)) for i in range(10)]
    )
    _commit_first(pipeline, group_id, 10)
    produce_records(
        pipeline, topic, [(f"n-{i}".encode(), make_telemetry(f"n-{i}", i)) for i in range(10, 25)]
    )
    consumer = make_consumer(pipeline, [topic], group_id=group_id)
    loop = BatchLoop(
        consumer,
        CrashingProducer(make_producer(pipeline)),
        echo(pipeline),
        dead_letter_topic=pipeline.topic("dead-letter"),
        group_id=group_id,
        max_records=15,
    )

    with pytest.raises(SystemExit):
        loop.run()

    again = read_topic(pipeline, topic, 15, group_id=group_id, from_beginning=False)
    assert sorted(int(m.key[2:]) for m in again) == list(range(10, 25))  # re-read from the commit


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_commit_after_flush_leaves_the_group_at_the_right_position(
    pipeline, group_id, make_telemetry, produce_records
):
    topic = pipeline.topic("telemetry")
    produce_records(
        pipeline,
        topic,
        [(f"n-{i % 9}".encode(), make_telemetry(f"n-{i % 9}", i)) for i in range(90)],
    )
    seen = []

    def collect(recs):
        seen.extend((m.partition, m.offset) for m, _ in recs)
        return []

    first = run_consumer(
        pipeline,
        [topic],
        collect,
        group_id=group_id,
        from_beginning=True,
        max_records=40,
        install_signals=False,
    )
    consumer = make_consumer(pipeline, [topic], group_id=group_id)
    try:
        committed = consumer.committed([(topic, p) for p in range(3)])
    finally:
        consumer.close()
    second = run_consumer(
        pipeline, [topic], collect, group_id=group_id, idle_timeout=3, install_signals=False
    )

    assert first.records_in == 40 and sum(o or 0 for o in committed.values()) == 40
    assert second.records_in == 50
    assert len(seen) == len(set(seen)) == 90  # every record once: no gap, no overlap


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sigterm_stops_ingest_gracefully_after_committing(
    pipeline, group_id, make_telemetry, produce_records
):
    topic = pipeline.topic("telemetry")
    produce_records(
        pipeline,
        topic,
        [(f"n-{i % 5}".encode(), make_telemetry(f"n-{i % 5}", i)) for i in range(200)]
        + [(b"n-x", b"not json")],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWCP_")}
    cmd = [
        sys.executable,
        "-m",
        "consumers.ingest",
        "--from-beginning",
        "--interval",
        "0.2",
        "--bootstrap-servers",
        pipeline.bootstrap_servers,
        "--backend",
        pipeline.backend,
        "--topic-prefix",
        pipeline.topic_prefix,
        "--group-id",
        group_id,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "201 records" in line or not line:
                break
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(lines) + err
    assert "201 records" in lines[-1] and "dead letters 1" in lines[-1] and "nodes 5" in lines[-1]
    assert "stopped (stop requested) after 201 records" in err
    consumer = make_consumer(pipeline, [topic], group_id=group_id)
    try:
        assert (
            sum(o or 0 for o in consumer.committed([(topic, p) for p in range(3)]).values()) == 201
        )
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_null_empty_wrongly_keyed_and_twice_named_records_are_told_apart(
    pipeline, group_id, make_telemetry, produce_records, read_topic
):
    twice = b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-3", "node_id": "n-4"}'
    last_wins = b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-5", "rtt_ms": 1, "rtt_ms": 2}'
    records = [
        (b"n-1", None),  # a tombstone
        (b"n-2", b""),  # an empty value
        (b"n-001", make_telemetry("n-dup", 1)),  # keyed by another node than its own
        (b"n-3", twice),
        (b"n-5", last_wins),
        (None, make_telemetry("n-6", 2)),  # no key: nothing to check
    ]
    produce_records(pipeline, pipeline.topic("telemetry"), records)
    seen: list = []

    def keep(recs):
        seen.extend(rec for _m, rec in recs)
        return []

    stats = run_consumer(
        pipeline, [pipeline.topic("telemetry")], keep, group_id=group_id, from_beginning=True,
        max_records=len(records), install_signals=False, key_field="node_id",
    )  # fmt: skip
    assert (stats.records_in, stats.dead_letters) == (6, 4)
    assert sorted((r.node_id, r.rtt_ms) for r in seen) == [("n-5", 2.0), ("n-6", 14.5)]
    letters = {
        m.key: decode(m.value, DeadLetter)
        for m in read_topic(pipeline, pipeline.topic("dead-letter"), 4)
    }
    assert set(letters) == {b"n-1", b"n-2", b"n-001", b"n-3"}
    assert letters[b"n-1"].original is None and "null value (a tombstone)" in letters[b"n-1"].reason
    assert letters[b"n-2"].original == b"" and letters[b"n-2"].reason == "empty value (zero bytes)"
    wrong = letters[b"n-001"]
    assert wrong.errors[0].field == "node_id" and "Kafka key 'n-001' is not the record's node_id 'n-dup'" in wrong.reason
    assert letters[b"n-3"].reason.startswith("node_id: given 2 times ('n-3', 'n-4')")
