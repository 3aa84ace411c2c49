"""Topic administration on kafka-python's ``KafkaAdminClient`` (see :mod:`stream.kafka.kafka_python`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import kafka.errors as kerr
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

from stream.errors import TopicError
from stream.kafka.base import Admin
from stream.kafka.kafka_python import _unavailable, connection_config
from stream.kafka.kafka_python_auth import check_login
from stream.settings import Settings


class KafkaPythonAdmin(Admin):
    """:class:`~stream.kafka.base.Admin` on ``kafka.KafkaAdminClient``."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._timeout_ms = int(timeout_s * 1000)
        cfg = connection_config(settings)
        check_login(settings, cfg, timeout_ms=self._timeout_ms)
        try:
            self._admin = KafkaAdminClient(**cfg, bootstrap_timeout_ms=self._timeout_ms)
        except (kerr.KafkaTimeoutError, kerr.KafkaConnectionError) as exc:
            raise _unavailable(settings, exc) from exc

    def create_topics(self, topics: Mapping[str, int], replication_factor: int) -> dict[str, bool]:
        if not topics:
            return {}
        spec = {
            n: {"num_partitions": p, "replication_factor": replication_factor}
            for n, p in topics.items()
        }
        result = self._admin.create_topics(spec, timeout_ms=self._timeout_ms, raise_errors=False)
        created: dict[str, bool] = {}
        for t in result["topics"]:
            error = kerr.for_code(t["error_code"])
            if error is kerr.TopicAlreadyExistsError:
                created[t["name"]] = False
            elif t["error_code"]:
                raise TopicError(
                    f"cannot create topic {t['name']!r}: {error.__name__} {t.get('error_message') or ''}"
                )
            else:
                created[t["name"]] = True
        new = [n for n, c in created.items() if c]
        if new:
            self._admin.wait_for_topics(new, timeout_ms=self._timeout_ms)
        return created

    def list_topics(self) -> dict[str, int]:
        return {
            t["name"]: len(t["partitions"])
            for t in self._admin.describe_topics()
            if not t.get("is_internal") and not t["name"].startswith("__")
        }

    def delete_topics(self, names: Sequence[str]) -> None:
        if names:
            self._admin.delete_topics(list(names), timeout_ms=self._timeout_ms, raise_errors=False)

    def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        described = [t for t in self._admin.describe_topics([topic]) if not t["error_code"]]
        if not described:
            return {}
        tps = [TopicPartition(topic, p["partition_index"]) for p in described[0]["partitions"]]
        start, end = (
            self._admin.list_partition_offsets(
                {tp: spec for tp in tps}, timeout_ms=self._timeout_ms
            )
            for spec in (OffsetSpec.EARLIEST, OffsetSpec.LATEST)
        )
        return {tp.partition: (start[tp].offset, end[tp].offset) for tp in sorted(tps)}

    def group_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        # Right after a broker restart the group coordinator answers "loading" or "not the
        # coordinator" for a while; those errors are retriable, so ask again until the timeout
        # (librdkafka does the same inside the confluent admin).
        deadline = time.monotonic() + self._timeout_ms / 1000
        while True:
            try:
                got = self._admin.list_group_offsets({group_id: None}).get(group_id, {})
                break
            except kerr.KafkaError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        return {tp.partition: om.offset for tp, om in got.items() if tp.topic == topic and om.offset >= 0}

    def close(self) -> None:
        self._admin.close()
