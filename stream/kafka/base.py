"""The backend-neutral client interface: one ``Message`` type and three small ABCs.

Both backends (:mod:`stream.kafka.kafka_python` and :mod:`stream.kafka.confluent`) implement
:class:`Producer`, :class:`Consumer` and :class:`Admin` with the same semantics, so a consumer
shell never imports a Kafka library itself.

Semantics shared by both backends
---------------------------------
* Producers use ``acks=all`` with idempotence; ``flush`` raises
  :class:`stream.errors.DeliveryError` if any record produced since the last ``flush`` failed,
  and :class:`stream.errors.KafkaUnavailableError` if the timeout expired first.
* Consumers never auto-commit. ``commit`` takes the *next* offset to read per
  ``(topic, partition)`` and blocks until the broker has stored it.
* A partition assigned without a committed offset gets its start offset (by the
  ``from_beginning`` reset policy) committed before any of its records is returned, so a
  restart never re-applies the reset policy and skips records (which ``latest`` would do).
* ``on_revoke(partitions)`` is called before a rebalance takes partitions away (and on
  ``close``); lost partitions (forced eviction) are reported through ``on_revoke`` too.
  Callbacks run while ``poll_batch``/``close`` is in progress, never concurrently with the
  caller's own processing.

Examples
--------
>>> m = Message("dwcp.telemetry", 2, 41, b"n-001", b"{}", 1767607200000)
>>> m.topic_partition, m.next_offset, m.headers
(('dwcp.telemetry', 2), 42, ())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Self

import msgspec

#: ``(topic, partition)``.
TopicPartition = tuple[str, int]
#: Kafka headers: ``[(name, value), ...]``.
Headers = Sequence[tuple[str, bytes]]
#: A rebalance callback: receives the partitions assigned or about to be revoked.
RebalanceCallback = Callable[[list[TopicPartition]], None]


class Message(msgspec.Struct, frozen=True, gc=False):
    """One consumed record; ``value`` is ``b""`` for a tombstone (a null value), which also
    sets ``null``, so that it can be told apart from an empty value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()
    null: bool = False

    @property
    def topic_partition(self) -> TopicPartition:
        """``(topic, partition)`` of the record."""
        return (self.topic, self.partition)

    @property
    def next_offset(self) -> int:
        """The offset to commit once this record is processed."""
        return self.offset + 1


class _Closing(ABC):
    """A client that is also a context manager: ``with ... as c:`` closes it on exit."""

    @abstractmethod
    def close(self) -> None:
        """Release the client."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Producer(_Closing):
    """Asynchronous producer; delivery is confirmed (or reported failed) by :meth:`flush`."""

    @abstractmethod
    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record; records with the same key go to the same partition, in order."""

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged.

        Raises
        ------
        stream.errors.DeliveryError
            If any record queued since the last ``flush`` was rejected or timed out.
        stream.errors.KafkaUnavailableError
            If ``timeout`` seconds passed with records still in flight.
        """

    @abstractmethod
    def close(self) -> None:
        """Flush what is queued (best effort) and release the connection."""


class Consumer(_Closing):
    """A consumer-group member with manual, synchronous commits."""

    @abstractmethod
    def poll_batch(self, max_records: int, timeout_ms: int) -> list[Message]:
        """Return up to ``max_records`` records, waiting at most ``timeout_ms`` for the first."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offsets to read, synchronously.

        Raises
        ------
        stream.errors.CommitError
            If the broker refused the commit (e.g. the group rebalanced meanwhile).
        """

    @abstractmethod
    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed next offset per partition (``None`` if none yet)."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Partitions currently assigned to this member."""

    def pause(self, partitions: Sequence[TopicPartition]) -> None:  # noqa: B027 - optional
        """Stop fetching these partitions (polls return none of their records) until resumed."""

    def resume(self, partitions: Sequence[TopicPartition]) -> None:  # noqa: B027 - optional
        """Fetch paused partitions again."""

    def seek(self, partition: TopicPartition, offset: int) -> None:  # noqa: B027 - optional
        """Fetch ``partition`` from ``offset`` next (it must be assigned)."""

    def end_offsets(self) -> dict[TopicPartition, int]:
        """Last known end offset (high watermark) per assigned partition, from the fetch
        responses (no broker round trip); a partition not fetched yet is absent."""
        return {}

    def caught_up(self) -> set[TopicPartition]:
        """Assigned partitions whose position has reached their last known end offset (from
        the fetch responses; no broker round trip): nothing more to read there right now."""
        return set()

    def reachable(self) -> bool:
        """Whether the partitions' brokers can be reached now (cheap while they can). While
        they cannot, an empty poll says nothing about the partitions: the loop's event-time
        alignment does not count such polls toward a partition's idleness."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Leave the group (calling ``on_revoke``) and release the connection. No commit."""


class Admin(_Closing):
    """The few cluster operations the pipeline needs."""

    @abstractmethod
    def create_topics(self, topics: Mapping[str, int], replication_factor: int) -> dict[str, bool]:
        """Create ``{name: partitions}``; ``True`` per topic created now, ``False`` if it existed."""

    @abstractmethod
    def list_topics(self) -> dict[str, int]:
        """``{name: partition count}`` of every (non-internal) topic."""

    @abstractmethod
    def delete_topics(self, names: Sequence[str]) -> None:
        """Delete topics; missing ones are ignored."""

    @abstractmethod
    def partition_offsets(self, topic: str) -> dict[int, tuple[int, int]]:
        """``{partition: (log start offset, end offset)}`` of ``topic`` (``{}`` if missing)."""

    @abstractmethod
    def group_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """The group's committed next offset per partition of ``topic`` (absent: none yet)."""

    def consumer_lag(self, group_id: str, topic: str) -> dict[int, int]:
        """Records of ``topic`` the group has not committed yet, per partition.

        Lag is the end offset minus the committed offset; a partition with no commit counts
        from its log start offset (the group will read it all).
        """
        committed = self.group_offsets(group_id, topic)
        return {
            p: max(0, end - committed.get(p, start))
            for p, (start, end) in self.partition_offsets(topic).items()
        }

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""
