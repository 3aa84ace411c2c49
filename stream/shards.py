"""State kept per shard of the key space, so that it follows its partition from member to member.

With ``--state-shards N`` (``DWCP_STATE_SHARDS``) a processor keeps one independent state per
shard, and a record belongs to shard ``murmur2(key) % N``: the hash the Java client,
kafka-python and our librdkafka producer (``partitioner=murmur2_random``) use to choose a
record's partition. So on a telemetry topic with ``P`` partitions, ``P`` dividing ``N``, every
key of shard ``k`` is on partition ``k % P``, and the member that is assigned a partition owns
exactly the shards on it:

* **assigned**: each of its shards is restored from the shard's newest checkpoint (or starts
  fresh), and the partition is read again from where those states stopped;
* **revoked**: each of its shards is checkpointed (after the commit), then dropped once the
  assignment is settled (kept if the partition comes straight back);
* **periodic and final checkpoints** save every owned shard with its partition's position.

Each shard's state sees only its own keys, in partition order, so a file, one partition, six
partitions, two members and a rebalance give the same answer (the mechanism Kafka Streams calls
a task's state store; here per-partition checkpoints in the state folder, which members on one
machine, or on a shared volume, share). A shard's clock is its own keys' event time.

Examples
--------
>>> shard_of(b"n-001", 6), shard_of(b"n-002", 6), shard_of(b"n-001", 1)
(3, 5, 0)
>>> shards_on(2, partitions=3, shards=6)
[2, 5]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka.partitioner.default import murmur2

from stream.checkpoint import CheckpointStore
from stream.errors import DwcpError
from stream.kafka import Message, TopicPartition
from stream.loop import Output
from stream.processor import Processor

__all__ = ["ShardSet", "shard_of", "shards_on"]

log = logging.getLogger(__name__)

Position = tuple[int, Sequence[int]]  # (offset, offsets after it already handled)


def shard_of(key: bytes, shards: int) -> int:
    """The shard of a key: the partition the Java client would give it on ``shards`` partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % shards


def shards_on(partition: int, partitions: int, shards: int) -> list[int]:
    """The shards whose keys are on ``partition`` of a topic with ``partitions`` partitions."""
    return list(range(partition, shards, partitions))


class ShardSet:
    """The shards a member owns, for every processor it runs (see the module docstring).

    Parameters
    ----------
    processors
        Built processors, each ``shardable``.
    stores
        ``stores(name, shard)``: the checkpoint store of one processor's shard, or ``None``
        (stateless: neither restore nor save).
    shards, partitions
        ``N`` and the telemetry topic's partition count ``P`` (``P`` must divide ``N``).
    say
        Where restores are reported.
    positions
        False for a file source: its line numbers are no offsets of any partition, so a
        restored shard neither seeks nor skips (a file is read whole).
    """

    def __init__(
        self,
        processors: Sequence[Processor],
        stores: Callable[[str, int], CheckpointStore | None],
        shards: int,
        partitions: int,
        say: Callable[[str], None] = log.info,
        positions: bool = True,
    ) -> None:
        if shards % partitions:
            raise DwcpError(
                f"--state-shards {shards} needs a telemetry topic whose partition count divides "
                f"it, so that each shard lives on one partition; the topic has {partitions} "
                f"(use a multiple of {partitions}, e.g. {partitions * max(1, shards // partitions)})"
            )
        not_ok = [p.name for p in processors if not p.shardable]
        if not_ok:
            raise DwcpError(
                f"--state-shards: {', '.join(not_ok)} keeps one state for all keys and cannot be "
                "sharded yet; run it without --state-shards"
            )
        self.processors = list(processors)
        self.n, self.p = shards, partitions
        self.stores = {(p.name, k): stores(p.name, k) for p in processors for k in range(shards)}
        self.say = say
        self.use_positions = positions
        self.owned: dict[int, TopicPartition] = {}  # shard -> the partition it is read from
        self.suspended: set[int] = set()  # revoked, saved; dropped unless assigned back
        # per (processor index, shard): records of its partition it handled already
        self._skip: dict[tuple[int, int], tuple[int, frozenset[int], int]] = {}
        self._shard: dict[str, int] = {}  # node -> shard
        self._checked: set[tuple[str, int]] = set()  # (node, partition) pairs verified

    # -- assignment ----------------------------------------------------------------------------
    def assign(self, assigned: set[TopicPartition]) -> dict[TopicPartition, Position]:
        """The member's assignment now: drop shards it lost, restore those it gained; returns
        where to read each gained partition from (the oldest position among its shards' states,
        none for a partition whose shards all start fresh)."""
        for k in [k for k, tp in self.owned.items() if tp not in assigned]:
            self._drop(k)
        self.suspended.clear()  # the rest came straight back: their state in memory is current
        have = set(self.owned.values())
        seek: dict[TopicPartition, Position] = {}
        for tp in sorted(assigned - have):
            starts: list[Position] = []
            for k in shards_on(tp[1], self.p, self.n):
                starts += self._take(k, tp)
            if starts:
                low = min(off for off, _done in starts)
                seek[tp] = (low, sorted({d for off, done in starts if off == low for d in done}))
        return seek

    def _take(self, k: int, tp: TopicPartition) -> list[Position]:
        self.owned[k] = tp
        starts: list[Position] = []
        for i, proc in enumerate(self.processors):
            store = self.stores[(proc.name, k)]
            got = store.load() if store is not None else None
            state = None
            if got is not None:
                wrapped, meta = got
                if (
                    isinstance(wrapped, dict)
                    and wrapped.get("processor") == proc.name
                    and wrapped.get("format") == proc.state_format
                    and wrapped.get("shards") == self.n
                ):
                    state = wrapped["state"]
                    pos = (wrapped.get("positions") or {}).get(tp) if self.use_positions else None
                    if pos is not None:
                        off, done = pos
                        starts.append((off, list(done)))
                        self._skip[(i, k)] = (off, frozenset(done), max(done, default=off - 1))
                    if pos is not None:
                        where = f"partition {tp[1]} from offset {pos[0]}"
                    elif self.use_positions:
                        where = f"partition {tp[1]} from its committed offset"
                    else:
                        where = "the file from its start"
                    self.say(
                        f"{proc.name}: shard {k} restored from checkpoint v{meta['version']} "
                        f"({wrapped.get('model_version')}), reading {where}"
                    )
                else:
                    log.warning("%s: shard %d checkpoint in %s is of another format; fresh",
                                proc.name, k, store.dir if store else "")
            proc.add_shard(k, state)
        return starts

    def _drop(self, k: int) -> None:
        del self.owned[k]
        self.suspended.discard(k)
        for i, proc in enumerate(self.processors):
            proc.drop_shard(k)
            self._skip.pop((i, k), None)

    def revoke(self, partitions: Sequence[TopicPartition]) -> list[int]:
        """Partitions are about to go (checkpoint them next): their shards stop saving."""
        gone = set(partitions)
        ks = [k for k, tp in self.owned.items() if tp in gone and k not in self.suspended]
        return ks

    # -- records -------------------------------------------------------------------------------
    def split(self, batch: list[tuple[Message, Any]]) -> dict[int, list[tuple[Message, Any]]]:
        """The batch per owned shard, in order; a record on the partition its key does not
        hash to is an error (the topic is partitioned by another hash: state cannot follow)."""
        out: dict[int, list[tuple[Message, Any]]] = {}
        shard, checked, n, p = self._shard, self._checked, self.n, self.p
        for item in batch:
            m, rec = item
            node = rec.node_id
            k = shard.get(node)
            if k is None:
                k = shard[node] = shard_of(node.encode(), n)
            if (node, m.partition) not in checked:
                if k % p != m.partition or k not in self.owned:
                    raise DwcpError(
                        f"node {node!r} is on partition {m.partition} of {m.topic}, but its key "
                        f"hashes to partition {k % p} of {p} (murmur2): --state-shards needs "
                        "telemetry keyed by node_id with the default partitioner (Java, "
                        "kafka-python; librdkafka partitioner=murmur2_random)"
                    )
                checked.add((node, m.partition))
            out.setdefault(k, []).append(item)
        return out

    def fresh(self, i: int, k: int, items: list[tuple[Message, Any]]) -> list[tuple[Message, Any]]:
        """``items`` less those processor ``i``'s shard ``k`` handled before its checkpoint."""
        skip = self._skip.get((i, k))
        if skip is None:
            return items
        off, done, last = skip
        keep = [x for x in items if x[0].offset >= off and x[0].offset not in done]
        if items and items[-1][0].offset > last:
            del self._skip[(i, k)]  # past everything it had handled
        return keep

    def handle(self, batch: list[tuple[Message, Any]]) -> list[tuple[Processor, list[Output]]]:
        """Every processor on each shard's records; outputs per processor."""
        parts = self.split(batch)
        out = []
        for i, proc in enumerate(self.processors):
            got: list[Output] = []
            for k, items in parts.items():
                mine = self.fresh(i, k, items)
                if mine:
                    got += proc.handle_shard(k, mine)
            out.append((proc, got))
        return out

    # -- checkpoints ---------------------------------------------------------------------------
    def save(
        self,
        positions: Mapping[TopicPartition, Any],
        why: str,
        final: bool = False,
        only: Sequence[int] | None = None,
    ) -> None:
        """Checkpoint the owned shards (``only`` these), each with its partition's position."""
        ks = sorted(self.owned) if only is None else sorted(only)
        for k in ks:
            if k in self.suspended:
                continue
            tp = self.owned[k]
            pos = {tp: positions[tp]} if tp in positions else {}
            for proc in self.processors:
                store = self.stores[(proc.name, k)]
                if store is None:
                    continue
                version = proc.shard_version(k)
                store.save(
                    {
                        "processor": proc.name,
                        "format": proc.state_format,
                        "shards": self.n,
                        "model_version": version,
                        "state": proc.shard_state(k, final=final),
                        "positions": pos,
                    },
                    meta={"processor": proc.name, "shard": k, "why": why, "model_version": version},
                )
        if ks:
            log.info("checkpoint of shard(s) %s (%s)", ",".join(map(str, ks)), why)

    def suspend(self, ks: Sequence[int]) -> None:
        """Saved on revoke: not saved again unless the partition comes back."""
        self.suspended.update(ks)
