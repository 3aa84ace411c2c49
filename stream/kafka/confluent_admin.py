"""Topic administration on confluent-kafka's ``AdminClient`` (see :mod:`stream.kafka.confluent`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from stream.errors import KafkaUnavailableError, TopicError
from stream.kafka.base import Admin
from stream.kafka.confluent import _build, connection_config
from stream.kafka.confluent_auth import ErrorWatch
from stream.settings import Settings


class ConfluentAdmin(Admin):
    """:class:`~stream.kafka.base.Admin` on ``confluent_kafka.admin.AdminClient``."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._timeout = timeout_s
        self._servers = settings.bootstrap_servers
        self._watch = ErrorWatch(settings)
        self._admin = _build(AdminClient, connection_config(settings, self._watch), "admin")
        self.list_topics()  # fail fast, like the kafka-python admin's bootstrap

    def create_topics(self, topics: Mapping[str, int], replication_factor: int) -> dict[str, bool]:
        if not topics:
            return {}
        futures = self._admin.create_topics(
            [
                NewTopic(n, num_partitions=p, replication_factor=replication_factor)
                for n, p in topics.items()
            ],
            operation_timeout=self._timeout,
            request_timeout=self._timeout,
        )
        created: dict[str, bool] = {}
        for name, fut in futures.items():
            try:
                fut.result(timeout=self._timeout + 5)
                created[name] = True
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"cannot create topic {name!r}: {err.str()}") from exc
                created[name] = False
        return created

    def list_topics(self) -> dict[str, int]:
        # In 1 s slices, serving error_cb in between, so a refused login ends it at once.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                meta = self._admin.list_topics(timeout=min(1.0, self._timeout))
                break
            except KafkaException as exc:
                self._admin.poll(0)
                self._watch.raise_from(exc, "listing topics")
                if time.monotonic() >= deadline:
                    raise KafkaUnavailableError(
                        f"Kafka broker at {self._servers} is unreachable: {exc.args[0].str()}"
                    ) from exc
        return {n: len(t.partitions) for n, t in meta.topics.items() if not n.startswith("__")}

    def delete_topics(self, names: Sequence[str]) -> None:
        if not names:
            return
        for name, fut in self._admin.delete_topics(
            list(names), operation_timeout=self._timeout
        ).items():
            try:
                fut.result(timeout=self._timeout + 5)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise TopicError(f"cannot delete topic {name!r}: {exc.args[0].str()}") from exc

    def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        meta = self._admin.list_topics(topic, timeout=self._timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        got: dict[str, dict[int, int]] = {}
        for name, spec in (("start", OffsetSpec.earliest()), ("end", OffsetSpec.latest())):
            futures = self._admin.list_offsets(
                {tp: spec for tp in tps}, request_timeout=self._timeout
            )
            got[name] = {
                tp.partition: fut.result(timeout=self._timeout + 5).offset
                for tp, fut in futures.items()
            }
        return {p: (got["start"][p], got["end"][p]) for p in sorted(got["end"])}

    def group_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        futures = self._admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id)], request_timeout=self._timeout
        )
        result = futures[group_id].result(timeout=self._timeout + 5)
        return {
            tp.partition: tp.offset
            for tp in result.topic_partitions or []
            if tp.topic == topic and tp.offset >= 0
        }

    def close(self) -> None:
        pass  # AdminClient has no close; its resources go with the object
