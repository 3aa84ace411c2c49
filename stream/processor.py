"""The contract of a model on the stream: what :mod:`stream.app` needs from a processor."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from stream.errors import DwcpError
from stream.kafka import Message, TopicPartition
from stream.loop import Output
from stream.metrics import ProcessorMetrics
from stream.settings import Settings

__all__ = ["Processor"]


class Processor(ABC):
    """One model on the stream. Subclasses set ``name`` and ``outputs`` and implement
    :meth:`handle`, :meth:`state` and :meth:`status`.

    ``__init__(settings, args, state)`` builds the processor; ``state`` is what :meth:`state`
    returned before (restored from the newest checkpoint) or ``None`` for a fresh start.
    """

    #: Short name: the consumer group ``dwcp-<name>`` and the checkpoint folder ``<name>-<group>``.
    name: ClassVar[str]
    #: Logical topics it writes (``"alerts"``, ``"predictions"``).
    outputs: ClassVar[tuple[str, ...]] = ()
    #: Bump when :meth:`state` changes shape; older checkpoints are then ignored (fresh start).
    state_format: ClassVar[int] = 1
    #: One-line description for ``--help``.
    description: ClassVar[str] = ""

    @abstractmethod
    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        """Build from the settings, the parsed flags and a restored state (or ``None``)."""

    @classmethod  # noqa: B027 - an optional hook
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the processor's own flags (in an argument group named after it).

        Alone, a processor's flags are spelled as it adds them (``--window``); beside others
        (``python -m consumers run a b``) each is prefixed with its name (``--b.window``) and
        the processor still reads ``args.window``.
        """

    @classmethod  # noqa: B027 - an optional hook
    def configure(cls, args: argparse.Namespace) -> None:
        """Process-wide set-up before any processor is built (thread limits...)."""

    #: Set to True to have the shell checkpoint right after the next commit (a new model).
    checkpoint_due: bool = False

    @abstractmethod
    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Process a batch of validated telemetry; return the records to produce."""

    @abstractmethod
    def state(self, final: bool = False) -> Any:
        """A picklable snapshot that matches the records handled so far (called after a
        commit; ``final`` on shutdown: finish background work first if it should be kept)."""

    def prefetch(self, batch: list[tuple[Message, Any]]) -> None:  # noqa: B027 - optional
        """Start work on ``batch`` that can run beside the other processors' :meth:`handle`
        (model inference in a thread that releases the GIL); :meth:`handle` of the same batch
        follows. The outputs must be those :meth:`handle` alone would give."""

    def ready(self) -> None:  # noqa: B027 - an optional hook
        """Do the short preparation that would otherwise fall on the first records (compiled
        loops loaded from their cache, a worker process started). The shell calls it once,
        after ``--learn-from`` and before the consumer joins its group."""

    def learn(self, batch: list[tuple[Message, Any]]) -> None:
        """Learn from a batch of history (``--learn-from``): by default :meth:`handle`, its
        outputs discarded."""
        self.handle(batch)

    def end_learning(self) -> None:  # noqa: B027 - an optional hook
        """The history is learned; live records follow. Reset what must not carry over from it
        (open incidents, heartbeats, event-time watermarks), keep what was learned."""

    def status(self) -> str:
        """A fragment of the progress line."""
        return ""

    @property
    def model_version(self) -> str:
        """Version of the model(s) whose outputs it is producing now."""
        return ""

    def summary(self) -> dict[str, Any]:
        """Figures for the end of a run (printed as JSON with ``--summary``)."""
        return {}

    def observe(self, metrics: ProcessorMetrics) -> None:
        """Report gauges (open incidents, fits, forecast error) to ``metrics``; called on the
        loop's thread after a batch, at most once a second. The default reports the model
        version; alerts are counted by the shell from the outputs."""
        metrics.model_version(self.model_version)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:  # noqa: B027 - optional
        """Partitions are about to go to another member (their offsets are committed)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release workers and threads (after the final checkpoint)."""

    # -- state per shard (``--state-shards N``, :mod:`stream.shards`) --------------------------
    #: True when the processor can keep one independent state per shard of the keys. It is
    #: then built with ``state=None`` and given its shards with :meth:`add_shard`.
    shardable: ClassVar[bool] = False

    def add_shard(self, shard: int, state: Any | None) -> None:
        """Own ``shard`` from now on: its restored :meth:`shard_state` or ``None`` (fresh)."""
        raise self._unsharded()

    def drop_shard(self, shard: int) -> None:
        """``shard`` went to another member (its state was saved): forget it."""
        raise self._unsharded()

    def handle_shard(self, shard: int, batch: list[tuple[Message, Any]]) -> list[Output]:
        """:meth:`handle` for the records of one shard, with that shard's state only."""
        raise self._unsharded()

    def shard_state(self, shard: int, final: bool = False) -> Any:
        """:meth:`state` of one shard."""
        raise self._unsharded()

    def _unsharded(self) -> DwcpError:
        """What the shard methods of a processor without ``shardable`` raise (the shell
        refuses ``--state-shards`` for it first, so only a caller that skipped that sees it)."""
        return DwcpError(f"{self.name} keeps one state for all keys, not one per shard "
                         "(shardable is False): run it without --state-shards")

    def shard_version(self, shard: int) -> str:
        """:attr:`model_version` of one shard."""
        return self.model_version
