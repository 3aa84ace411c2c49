"""The confluent-kafka backend (librdkafka; the optional ``fast`` extra).

Imported only when ``Settings.backend == "confluent"``; :func:`stream.kafka.make_producer`
turns a missing package into a :class:`~stream.errors.SettingsError` saying how to install it.
Rebalance callbacks run inside ``poll_batch``/``close`` on the caller's thread.

The producer hashes keys with ``murmur2`` like the Java client and kafka-python (librdkafka's
default is CRC32), so a node's records land on the same partition whichever backend produced
them. Throughput settings (over librdkafka's defaults): producer ``linger.ms=5``, lz4 compression,
a 1M-message local queue and delivery reports for failures only (``acks=all`` and idempotence
kept); consumer 4 MiB per-partition fetches and ``fetch.wait.max.ms=100``. Overrides use
librdkafka names; ``linger_ms`` is accepted for ``linger.ms`` so the same keyword works for
both backends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTP

from stream.errors import (
    CommitError,
    DeliveryError,
    KafkaUnavailableError,
    SettingsError,
)
from stream.kafka.base import (
    Consumer,
    Headers,
    Message,
    Producer,
    RebalanceCallback,
    TopicPartition,
)
from stream.kafka.confluent_auth import ErrorWatch
from stream.settings import Settings

log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("librdkafka")  # librdkafka's own log lines, instead of stderr

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",  # Java/kafka-python key hashing: same key -> same partition
    "linger.ms": 5,
    "compression.type": "lz4",
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "delivery.timeout.ms": 120_000,
    "delivery.report.only.error": True,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "fetch.wait.max.ms": 100,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
}
_PY_KEYS = {"error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_delivery", "on_commit", "logger"}
_NO_OFFSET = -1001  # librdkafka OFFSET_INVALID


def connection_config(
    settings: Settings, error_cb: Callable[[KafkaError], None] | None = None
) -> dict[str, Any]:
    """librdkafka connection keys (bootstrap, client id, SASL/SSL, logging) from ``settings``.

    ``error_cb`` (default: log the error) is usually the client's :class:`ErrorWatch`.
    """
    cfg: dict[str, Any] = {
        "error_cb": error_cb or _log_error,
        "logger": _rdkafka_log,
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol.lower(),
        # back within a second of the broker, as the Java client (librdkafka waits up to 10 s):
        # the event-time alignment gives producers idle_ms (5 s) after an outage
        "reconnect.backoff.max.ms": 1000,
    }
    if settings.security_protocol.startswith("SASL"):
        cfg["sasl.mechanism"] = settings.sasl_mechanism or "PLAIN"
        cfg["sasl.username"] = settings.sasl_username
        cfg["sasl.password"] = settings.sasl_password
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        if getattr(settings, ours):
            cfg[theirs] = getattr(settings, ours)
    return cfg


def _native(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k if "." in k or k in _PY_KEYS else k.replace("_", "."): v for k, v in overrides.items()
    }


def _build(cls: Any, cfg: dict[str, Any], what: str) -> Any:
    try:
        return cls(cfg)
    except KafkaException as exc:
        raise SettingsError(f"invalid confluent-kafka {what} config: {exc.args[0].str()}") from exc


def _log_error(err: KafkaError) -> None:
    log.warning("librdkafka: %s", err.str())


class ConfluentProducer(Producer):
    """:class:`~stream.kafka.base.Producer` on ``confluent_kafka.Producer``."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._servers = settings.bootstrap_servers
        self._failures: list[str] = []
        self._watch = ErrorWatch(settings)
        cfg = {
            **connection_config(settings, self._watch),
            **PRODUCER_DEFAULTS,
            "on_delivery": self._on_delivery,
            **_native(overrides),
        }
        self._producer = _build(CKProducer, cfg, "producer")
        self._since_poll = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            self._watch.keep(err, "producing", msg.topic())

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        self._watch.raise_if_refused()
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=list(headers) if headers else None
                )
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)
            except KafkaException as exc:  # rejected before sending, e.g. over message.max.bytes
                raise DeliveryError(f"{topic}: {exc.args[0].str()}") from exc
        self._since_poll += 1
        if self._since_poll >= 1000:  # serve delivery reports without a call per record
            self._since_poll = 0
            self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> None:
        # In slices, so a refused login (error_cb, served by flush) ends it within ~0.5 s.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._watch.raise_if_refused()
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            left = self._producer.flush(step)
            if not left or (deadline is not None and time.monotonic() >= deadline):
                break
        self._watch.raise_if_refused()
        if left:
            raise KafkaUnavailableError(
                f"{left} record(s) still in flight after {timeout}s (broker {self._servers})"
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} record(s) failed delivery; first: {failures[0]}")

    def close(self) -> None:
        left = self._producer.flush(0 if self._watch.refused else 30)
        if left:
            log.error(
                "producer closed with %d record(s) undelivered (broker %s)", left, self._servers
            )


class ConfluentConsumer(Consumer):
    """:class:`~stream.kafka.base.Consumer` on ``confluent_kafka.Consumer`` (group member)."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        group_id: str,
        from_beginning: bool = False,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        **overrides: Any,
    ) -> None:
        self._watch = ErrorWatch(settings, topics, group_id)
        cfg = {
            **connection_config(settings, self._watch),
            **CONSUMER_DEFAULTS,
            "group.id": group_id,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            **_native(overrides),
        }
        if str(cfg["enable.auto.commit"]).lower() not in ("false", "0"):
            raise SettingsError(
                "enable.auto.commit must stay False: offsets are committed explicitly"
            )
        self._consumer = _build(CKConsumer, cfg, "consumer")
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._from_beginning = from_beginning
        self._topics, self._next_probe = list(topics), 0.0
        self._closed = False
        self._consumer.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            self._pin(partitions)
        if self._on_assign:
            self._on_assign(sorted((tp.topic, tp.partition) for tp in partitions))

    def _pin(self, partitions: list[Any]) -> None:
        """Commit the start offset (by ``auto.offset.reset``) of partitions with no commit yet.

        Without it, a partition that returned no record before a restart would be reset again
        and, with ``latest``, skip what arrived meanwhile. Runs in the assignment callback, so
        fetching then starts exactly at the committed offset.
        """
        try:
            pins = []
            for tp in self._consumer.committed(partitions, timeout=10):
                if tp.offset < 0:
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
                    pins.append(CKTP(tp.topic, tp.partition, low if self._from_beginning else high))
            if pins:
                self._consumer.commit(offsets=pins, asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit start offsets of %s: %s", partitions, exc.args[0].str())

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        if self._on_revoke and partitions:
            self._on_revoke(sorted((tp.topic, tp.partition) for tp in partitions))

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        log.warning("partitions lost (evicted from the group): %s", partitions)
        self._revoked(consumer, partitions)

    def poll_batch(self, max_records: int, timeout_ms: int) -> list[Message]:
        out: list[Message] = []
        self._watch.raise_if_refused()
        # librdkafka's consume(n, timeout) returns only once it has n records or the timeout
        # has passed: at 1,000 records/s a batch of 5,000 waited the whole 500 ms poll
        # timeout every time, and every alert with it. Instead: what the client has fetched
        # already; if nothing, wait for the first record and take what came with it
        consumer = self._consumer
        got = consumer.consume(max_records, 0)
        if not got and timeout_ms > 0:
            got = consumer.consume(1, timeout_ms / 1000)
            if got and max_records > 1:
                got += consumer.consume(max_records - 1, 0)
        self._watch.raise_if_refused()  # error_cb ran inside consume
        for m in got:
            err = m.error()
            if err is not None:
                refused = self._watch.refusal(err, "consuming")
                if refused is not None:
                    raise refused
                if err.fatal():
                    raise KafkaUnavailableError(f"consumer error: {err.str()}")
                log.warning("consumer error: %s", err.str())
                continue
            value = m.value()
            out.append(
                Message(
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key(),
                    value or b"",
                    m.timestamp()[1],
                    tuple(m.headers() or ()),
                    value is None,
                )
            )
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        self._watch.raise_if_refused()
        try:
            result = self._consumer.commit(
                offsets=[CKTP(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            self._watch.raise_from(exc, "committing offsets")
            raise CommitError(f"commit of {dict(offsets)} failed: {exc.args[0].str()}") from exc
        for tp in result or ():
            if tp.error:
                self._watch.keep(tp.error, "committing offsets")
        self._watch.raise_if_refused()
        bad = [f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in result or () if tp.error]
        if bad:
            raise CommitError(f"commit failed for {', '.join(bad)}")

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        self._watch.raise_if_refused()
        try:
            got = self._consumer.committed([CKTP(t, p) for t, p in partitions], timeout=10)
        except KafkaException as exc:
            self._watch.raise_from(exc, "reading committed offsets")
            raise
        return {
            (tp.topic, tp.partition): (None if tp.offset == _NO_OFFSET else tp.offset) for tp in got
        }

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._consumer.pause([CKTP(t, p) for t, p in partitions])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        if partitions:
            self._consumer.resume([CKTP(t, p) for t, p in partitions])

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(CKTP(partition[0], partition[1], offset))

    def end_offsets(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                out[(tp.topic, tp.partition)] = high
        return out

    def caught_up(self) -> set[TopicPartition]:
        tps = self._consumer.assignment()
        if not tps:
            return set()
        out: set[TopicPartition] = set()
        for tp in self._consumer.position(tps):
            try:
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0 and tp.offset >= high:
                out.add((tp.topic, tp.partition))
        return out

    def reachable(self) -> bool:
        # librdkafka reports a lost connection (error_cb) but not its return: while one is
        # reported, ask for the topic's metadata, at most every 0.5 s, to see it answer again
        if not self._watch.down or self._closed:  # a closed consumer's list_topics segfaults
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + 0.5
        try:
            self._consumer.list_topics(self._topics[0] if self._topics else None, timeout=0.5)
        except KafkaException:
            return False
        self._watch.down = False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()
