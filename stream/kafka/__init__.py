"""The Kafka client layer: one interface, two backends, built from one :class:`Settings`.

``Settings.backend`` picks the implementation: ``"kafka-python"`` (pure Python, always
installed) or ``"confluent"`` (librdkafka, the ``fast`` extra; imported only when chosen).
Keyword ``overrides`` are passed to the backend as native config keys (kafka-python names, or
librdkafka names where ``linger_ms`` also means ``linger.ms``); unknown keys raise
:class:`~stream.errors.SettingsError` naming them.

Examples
--------
A round trip (needs the local broker: ``bash scripts/kafka-local.sh start``)::

    settings = Settings(backend="confluent")
    with make_producer(settings) as producer:
        producer.produce("dwcp.telemetry", b'{"node_id": "n-001", ...}', key=b"n-001")
        producer.flush()
    consumer = make_consumer(settings, ["dwcp.telemetry"], group_id="demo", from_beginning=True)
    batch = consumer.poll_batch(max_records=500, timeout_ms=1000)
    consumer.commit({m.topic_partition: m.next_offset for m in batch})
    consumer.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from stream.errors import SettingsError
from stream.kafka.base import (
    Admin,
    Consumer,
    Headers,
    Message,
    Producer,
    RebalanceCallback,
    TopicPartition,
)
from stream.settings import Settings

__all__ = [
    "Admin",
    "Consumer",
    "Headers",
    "Message",
    "Producer",
    "RebalanceCallback",
    "TopicPartition",
    "make_admin",
    "make_consumer",
    "make_producer",
]


def _backend(settings: Settings) -> ModuleType:
    if settings.backend == "confluent":
        try:
            from stream.kafka import confluent
        except ImportError as exc:
            raise SettingsError(
                "backend 'confluent' needs the confluent-kafka package "
                f"({exc}); install it with: pip install 'dwcp-stream[fast]' "
                "or use --backend kafka-python"
            ) from exc
        return confluent
    from stream.kafka import kafka_python

    return kafka_python


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A producer for ``settings.backend`` (``acks=all``, idempotent, batched).

    Parameters
    ----------
    settings
        Connection settings (bootstrap servers, security, client id).
    **overrides
        Native backend config keys, e.g. ``linger_ms=20``.

    Returns
    -------
    Producer
        Use ``produce`` then ``flush``; also a context manager that closes on exit.
    """
    mod = _backend(settings)
    cls = mod.ConfluentProducer if settings.backend == "confluent" else mod.KafkaPythonProducer
    producer: Producer = cls(settings, **overrides)
    return producer


def make_consumer(
    settings: Settings,
    topics: Sequence[str],
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    on_assign: RebalanceCallback | None = None,
    on_revoke: RebalanceCallback | None = None,
    **overrides: Any,
) -> Consumer:
    """A consumer-group member subscribed to ``topics``, with auto-commit off.

    Parameters
    ----------
    settings
        Connection settings; ``settings.group_id`` is the default group.
    topics
        Wire topic names (see :meth:`Settings.topic`).
    group_id
        Consumer group; defaults to ``settings.group_id``.
    from_beginning
        Where to start when the group has no committed offset for a partition: the earliest
        record (``True``) or only new records (``False``). Committed offsets always win.
    on_assign, on_revoke
        Called with ``[(topic, partition), ...]`` after an assignment and before partitions
        are taken away (rebalance, eviction or ``close``), so state can be checkpointed.
    **overrides
        Native backend config keys.

    Returns
    -------
    Consumer
    """
    if not (group_id or settings.group_id):
        raise SettingsError("no consumer group: pass group_id (see Settings.consumer_group) or set DWCP_GROUP_ID")
    mod = _backend(settings)
    cls = mod.ConfluentConsumer if settings.backend == "confluent" else mod.KafkaPythonConsumer
    consumer: Consumer = cls(
        settings,
        list(topics),
        group_id=group_id or settings.group_id,
        from_beginning=from_beginning,
        on_assign=on_assign,
        on_revoke=on_revoke,
        **overrides,
    )
    return consumer


def make_admin(settings: Settings, timeout_s: float = 10.0) -> Admin:
    """An admin client; raises :class:`~stream.errors.KafkaUnavailableError` if unreachable."""
    _backend(settings)  # the clear error if confluent-kafka is missing
    if settings.backend == "confluent":
        from stream.kafka.confluent_admin import ConfluentAdmin

        return ConfluentAdmin(settings, timeout_s=timeout_s)
    from stream.kafka.kafka_python_admin import KafkaPythonAdmin

    return KafkaPythonAdmin(settings, timeout_s=timeout_s)
