"""Fixtures for the Kafka client layer, topics and loop tests (broker ones start Kafka on demand).

``backend`` parametrizes every test that uses it over both client backends; ``kafka_settings``
is a :class:`Settings` for that backend with a uuid topic prefix, so tests that create the
five pipeline topics (``pipeline``) never share them.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest

from stream.kafka import Message, make_admin, make_consumer, make_producer
from stream.settings import BACKENDS, Settings
from stream.topics import ensure_topics

Produce = Callable[..., None]
Read = Callable[..., list[Message]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each client backend in turn."""
    return str(request.param)


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, backend: str) -> Settings:
    """Settings for the local broker and ``backend``, with a uuid topic prefix."""
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        backend=backend,
        topic_prefix=f"t-{uuid.uuid4().hex[:12]}.",
        client_id="pytest",
        partitions=3,
        batch_size=100,
        poll_timeout_ms=200,
    )


@pytest.fixture
def pipeline(kafka_settings: Settings) -> Iterator[Settings]:
    """``kafka_settings`` with its five topics created (3 partitions); deleted afterwards."""
    ensure_topics(kafka_settings)
    yield kafka_settings
    with make_admin(kafka_settings) as admin:
        admin.delete_topics(
            [t for t in admin.list_topics() if t.startswith(kafka_settings.topic_prefix)]
        )


def telemetry(node: str = "n-001", seq: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid telemetry record as a dict; ``fields`` override or add (``None`` removes)."""
    rec: dict[str, Any] = {
        "timestamp": f"2026-01-05T10:{seq // 60 % 60:02d}:{seq % 60:02d}Z",
        "node_id": node,
        "region": "us-east",
        "link_type": "wan",
        "rtt_ms": 12.5 + seq % 7,
        "packet_loss": 0.001,
        "bytes_tx": 1000 + seq,
        "cpu_util": 40.0,
    }
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not None}


@pytest.fixture
def make_telemetry() -> Callable[..., bytes]:
    """``make_telemetry(node, seq, **fields) -> bytes``: a valid record, JSON-encoded."""
    return lambda node="n-001", seq=0, **fields: orjson.dumps(telemetry(node, seq, **fields))


@pytest.fixture
def produce_records() -> Produce:
    """``produce_records(settings, topic, [(key, value) or (key, value, headers), ...])``."""

    def produce(settings: Settings, topic: str, records: Sequence[tuple[Any, ...]]) -> None:
        with make_producer(settings) as producer:
            for key, value, *headers in records:
                producer.produce(topic, value, key, headers[0] if headers else None)
            producer.flush(30)

    return produce


@pytest.fixture
def read_topic() -> Read:
    """``read_topic(settings, topic, n, group_id=None, from_beginning=True) -> messages``.

    Reads until ``n`` records arrived (then a short while more, to catch extras), commits
    them if a ``group_id`` is given, and closes the consumer.
    """

    def read(
        settings: Settings,
        topic: str,
        n: int,
        group_id: str | None = None,
        from_beginning: bool = True,
        timeout: float = 30.0,
    ) -> list[Message]:
        group = group_id or f"reader-{uuid.uuid4().hex}"
        if group_id is None:  # only reading what a test wrote: with librdkafka, which does not
            # drop a group-join answer that arrives outside poll() as kafka-python 3.0.12 does
            settings = dataclasses.replace(settings, backend="confluent")
        consumer = make_consumer(settings, [topic], group_id=group, from_beginning=from_beginning)
        got: list[Message] = []
        try:
            deadline = time.monotonic() + timeout
            while len(got) < n and time.monotonic() < deadline:
                got += consumer.poll_batch(500, 200)
            settle = time.monotonic() + 1.0
            while time.monotonic() < settle:
                got += consumer.poll_batch(500, 200)
            if group_id and got:
                offsets: dict[tuple[str, int], int] = {}
                for m in got:
                    offsets[m.topic_partition] = max(
                        offsets.get(m.topic_partition, 0), m.next_offset
                    )
                consumer.commit(offsets)
        finally:
            consumer.close()
        return got

    return read
