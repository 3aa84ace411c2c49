"""The kafka-python backend (pure Python, always installed).

kafka-python 3.x runs its network I/O on a background thread; rebalance callbacks run there
too, but only while the caller is blocked in ``poll_batch`` or ``close``, so they never race
the caller's batch processing.

Throughput settings (over kafka-python's defaults): producer ``linger_ms=5``, lz4 and 256 KiB
batches (``acks=all`` and idempotence are kept); consumer 4 MiB per-partition fetches and
``fetch_max_wait_ms=100``. Any of these, or any other kafka-python config key, can be
overridden through ``make_producer(settings, **overrides)`` / ``make_consumer``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kafka.errors as kerr
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTP

from stream.errors import (
    CommitError,
    DeliveryError,
    KafkaAuthError,
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
from stream.kafka.kafka_python_auth import check_login, refusal
from stream.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "compression_type": "lz4",
    "delivery_timeout_ms": 120_000,
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "max_poll_records": 1000,
}


def connection_config(settings: Settings) -> dict[str, Any]:
    """kafka-python connection keys (bootstrap, client id, SASL/SSL) from ``settings``."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        # back within a second of the broker, as the Java client (kafka-python 3 waits up to
        # 30 s): the event-time alignment gives producers idle_ms (5 s) after an outage
        "reconnect_backoff_max_ms": 1000,
    }
    if settings.security_protocol.startswith("SASL"):
        cfg["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        cfg["sasl_plain_username"] = settings.sasl_username or None
        cfg["sasl_plain_password"] = settings.sasl_password or None
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, key):
            cfg[key] = getattr(settings, key)
    return cfg


def _merge(
    base: dict[str, Any], overrides: Mapping[str, Any], known: Mapping[str, Any], what: str
) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise SettingsError(f"unknown kafka-python {what} config key(s): {', '.join(unknown)}")
    return {**base, **overrides}


def _unavailable(settings: Settings, exc: Exception) -> KafkaUnavailableError:
    return KafkaUnavailableError(
        f"Kafka broker at {settings.bootstrap_servers} is unreachable: {exc}"
    )


class KafkaPythonProducer(Producer):
    """:class:`~stream.kafka.base.Producer` on ``kafka.KafkaProducer``."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        cfg = _merge(
            {**connection_config(settings), **PRODUCER_DEFAULTS},
            overrides,
            KafkaProducer.DEFAULT_CONFIG,
            "producer",
        )
        self._settings = settings
        self._servers = settings.bootstrap_servers
        self._failures: list[str] = []
        self._refused: list[KafkaAuthError] = []
        check_login(settings, cfg)
        try:
            self._producer = KafkaProducer(**cfg)
        except kerr.KafkaTimeoutError as exc:
            raise _unavailable(settings, exc) from exc

    def _on_error(self, topic: str, exc: BaseException) -> None:
        refused = refusal(self._settings, exc, "producing", [topic])
        if refused is not None:
            self._refused.append(refused)  # atomic, like _failures: runs on the I/O thread
        self._failures.append(f"{topic}: {exc!r}")

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        try:
            future = self._producer.send(
                topic, value=value, key=key, headers=list(headers) if headers else None
            )
        except kerr.KafkaTimeoutError as exc:
            raise KafkaUnavailableError(
                f"no metadata for topic {topic!r} from {self._servers}: {exc}"
            ) from exc
        except kerr.KafkaError as exc:  # rejected before sending, e.g. over max_request_size
            refused = refusal(self._settings, exc, "producing", [topic])
            raise refused or DeliveryError(f"{topic}: {exc!r}") from exc
        future.add_errback(self._on_error, topic)  # runs at once if it already failed

    def flush(self, timeout: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except kerr.KafkaTimeoutError as exc:
            raise KafkaUnavailableError(
                f"records still in flight after {timeout}s (broker {self._servers}): {exc}"
            ) from exc
        if self._refused:
            self._failures, refused = [], self._refused[0]
            self._refused.clear()
            raise refused
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} record(s) failed delivery; first: {failures[0]}")

    def close(self) -> None:
        self._producer.close(timeout=30)


class _Listener(ConsumerRebalanceListener):
    def __init__(
        self,
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
        unpinned: set[KafkaTP],
    ) -> None:
        self._on_assign, self._on_revoke, self._unpinned = on_assign, on_revoke, unpinned

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._unpinned.update(assigned)  # pinned by the caller's thread in the next poll_batch
        if self._on_assign:
            self._on_assign(sorted((tp.topic, tp.partition) for tp in assigned))

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self._on_revoke and revoked:  # kafka-python also reports an empty revoke on first join
            self._on_revoke(sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_lost(self, lost: Any) -> None:
        log.warning("partitions lost (evicted from the group): %s", sorted(lost))
        self.on_partitions_revoked(lost)


def _keep_finished_joins(consumer: KafkaConsumer) -> None:
    """Make ``consumer`` install a JoinGroup/SyncGroup result that finished between two polls.

    kafka-python 3.0.12 keeps an unfinished join task across polls, but when the task
    finishes while the caller is outside ``poll()`` (busy with a batch, or a short poll timed
    out), the next poll sees it done, throws its assignment away and sends a new JoinGroup.
    The group then rebalances in a loop, or the member keeps no partitions: a member that
    polls for 5 ms every second never got one in 15 s (generation 13). The Java client, and
    kafka-python 2.x, complete the join from the finished future instead; this does the same,
    with the steps ``join_group_async`` runs after a successful wait. Without the private
    attributes it needs (another kafka-python version), nothing is changed.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    needed = ("_join_task", "_generation", "_lock", "_enable_heartbeat", "_on_join_complete_async")
    if coordinator is None or not all(hasattr(coordinator, a) for a in needed):
        log.debug("kafka-python without the 3.0 join task: finished joins left to the client")
        return
    from kafka.coordinator.base import MemberState

    original = coordinator.join_group_async

    async def join_group_async(timeout_ms: Any = None) -> bool:
        task = coordinator._join_task
        if task is None or not task.succeeded() or not coordinator.rejoining:
            return await original(timeout_ms)
        log.debug("installing a join that finished outside poll() (group %s)", coordinator.group_id)
        coordinator._join_task = None
        generation = coordinator._generation
        with coordinator._lock:
            coordinator.rejoining = False
            coordinator.rejoin_needed = False
            coordinator.state = MemberState.STABLE
            coordinator._enable_heartbeat()
        await coordinator._on_join_complete_async(
            generation.generation_id, generation.member_id, generation.protocol, task.value
        )
        return True

    coordinator.join_group_async = join_group_async


class KafkaPythonConsumer(Consumer):
    """:class:`~stream.kafka.base.Consumer` on ``kafka.KafkaConsumer`` (group member)."""

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
        base = {
            **connection_config(settings),
            **CONSUMER_DEFAULTS,
            "group_id": group_id,
            "auto_offset_reset": "earliest" if from_beginning else "latest",
        }
        cfg = _merge(base, overrides, KafkaConsumer.DEFAULT_CONFIG, "consumer")
        if cfg["enable_auto_commit"]:
            raise SettingsError(
                "enable_auto_commit must stay False: offsets are committed explicitly"
            )
        self._settings, self._topics, self._group = settings, list(topics), group_id
        check_login(settings, cfg)
        try:
            self._consumer = KafkaConsumer(**cfg)
        except kerr.KafkaTimeoutError as exc:
            raise _unavailable(settings, exc) from exc
        _keep_finished_joins(self._consumer)
        for topic in topics:  # metadata first, or the first join assigns nothing and rejoins
            self._consumer.partitions_for_topic(topic)
        self._unpinned: set[KafkaTP] = set()
        listener = _Listener(on_assign, on_revoke, self._unpinned)
        self._consumer.subscribe(topics=list(topics), listener=listener)

    def _refusal(self, exc: BaseException, action: str) -> KafkaAuthError | None:
        return refusal(self._settings, exc, action, self._topics, self._group)

    def poll_batch(self, max_records: int, timeout_ms: int) -> list[Message]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except kerr.KafkaError as exc:
            refused = self._refusal(exc, "consuming")
            if refused is None:
                raise
            raise refused from exc
        if self._unpinned:
            self._pin(batches)
        out: list[Message] = []
        for records in batches.values():
            out.extend(
                Message(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value if r.value is not None else b"",
                    r.timestamp,
                    tuple(r.headers) if r.headers else (),
                    r.value is None,
                )
                for r in records
            )
        return out

    def _pin(self, batches: Mapping[KafkaTP, list[Any]]) -> None:
        """Commit the start position of newly assigned partitions that have no commit yet.

        Without it, a partition that returned no record before a restart would be reset again
        by ``auto_offset_reset`` and, with ``latest``, skip what arrived meanwhile. The start
        is the first offset returned now, or the fetch position (nothing returned yet).
        """
        assigned = self._consumer.assignment()
        pins: dict[TopicPartition, int] = {}
        for tp in list(self._unpinned):
            if tp not in assigned or self._consumer.committed(tp) is not None:
                self._unpinned.discard(tp)
                continue
            records = batches.get(tp)
            start = records[0].offset if records else self._consumer.position(tp, timeout_ms=1000)
            if start is not None:  # else: not resolved yet, retried after the next poll
                pins[(tp.topic, tp.partition)] = start
        if pins:
            try:
                self.commit(pins)
            except CommitError as exc:  # e.g. a rebalance: retried after the next poll
                log.warning("could not commit start offsets: %s", exc)
                return
            self._unpinned.difference_update(KafkaTP(t, p) for t, p in pins)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        payload = {KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        try:
            self._consumer.commit(payload)
        except kerr.KafkaError as exc:
            refused = self._refusal(exc, "committing offsets")
            raise refused or CommitError(f"commit of {dict(offsets)} failed: {exc!r}") from exc

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        try:
            return {(t, p): self._consumer.committed(KafkaTP(t, p)) for t, p in partitions}
        except kerr.KafkaError as exc:
            refused = self._refusal(exc, "reading committed offsets")
            if refused is None:
                raise
            raise refused from exc

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    # pause()/resume() are the base class's no-ops: with kafka-python 3.0.12 a partition
    # paused and resumed mid-fetch was, in our tests, never fetched again (records left
    # unread until a restart). Without them the alignment queues are bounded by the backlog,
    # not by Aligner.max_queued; the confluent backend pauses for real.

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTP(*partition), offset)

    def end_offsets(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = high
        return out

    def caught_up(self) -> set[TopicPartition]:
        out: set[TopicPartition] = set()
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                pos = self._consumer.position(tp, timeout_ms=0)
            except Exception:  # no position yet (still resetting): not known to be caught up
                continue
            if pos is not None and pos >= high:
                out.add((tp.topic, tp.partition))
        return out

    def reachable(self) -> bool:
        # the leaders' connections, as kafka-python's client holds them (private: if this
        # version has none of it, say reachable, as before)
        client = getattr(self._consumer, "_client", None)
        connected, cluster = getattr(client, "connected", None), getattr(client, "cluster", None)
        if connected is None or cluster is None:
            return True
        for tp in self._consumer.assignment():
            leader = cluster.leader_for_partition(tp)
            if leader is None or leader < 0 or not connected(leader):
                return False
        return True

    def close(self) -> None:
        self._consumer.close(autocommit=False)


__all__ = ["KafkaPythonConsumer", "KafkaPythonProducer", "connection_config"]
