"""``python -m consumers.ingest``: the first consumer of the telemetry topic.

A consumer-group member that reads telemetry with the shared batch loop
(:mod:`stream.loop`), validates every record, sends bad ones to the dead-letter topic and
prints a live stats line: events/s, dead letters, distinct nodes and the largest per-node
count of out-of-order samples (a sample whose event time is earlier than the node's latest).
Telemetry is keyed by node_id, so each node's samples arrive in produce order; out-of-order
counts therefore measure the producers' event-time disorder, not Kafka's.

Run several copies with the same ``--group-id`` to share the partitions. It runs in the
application shell (:mod:`stream.app`) like every consumer; ``python -m consumers run`` with
other processors validates each record once for all of them, so ingest is only needed where
nothing else reads the topic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from stream import app
from stream.kafka import Message
from stream.loop import Output
from stream.settings import Settings


class IngestState:
    """Per-node bookkeeping of the ingest consumer (no I/O)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}
        self.out_of_order: dict[str, int] = {}

    def handle(self, records: list[tuple[Message, Any]]) -> list[Output]:
        """Loop handler: track each node's latest event time; ingest produces nothing."""
        latest, ooo = self.latest, self.out_of_order
        for _msg, rec in records:
            node, ts = rec.node_id, rec.timestamp
            last = latest.get(node)
            if last is None or ts >= last:
                latest[node] = ts
            else:
                ooo[node] = ooo.get(node, 0) + 1
        return []

    @property
    def nodes(self) -> int:
        """Distinct nodes seen."""
        return len(self.latest)

    @property
    def max_out_of_order(self) -> int:
        """Largest out-of-order count of any one node."""
        return max(self.out_of_order.values(), default=0)


class IngestProcessor(app.Processor):
    """:class:`IngestState` in the application shell (its state is the bookkeeping)."""

    name = "ingest"
    description = (
        "Consume the telemetry topic as a consumer-group member: validate every record, send bad "
        "ones (with reasons and origin) to the dead-letter topic, commit offsets only after that "
        "is flushed (at-least-once), and print a live stats line."
    )

    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        self.bookkeeping = state if isinstance(state, IngestState) else IngestState()

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        return self.bookkeeping.handle(batch)

    def state(self, final: bool = False) -> Any:
        return self.bookkeeping

    def status(self) -> str:
        b = self.bookkeeping
        return f"ingest: nodes {b.nodes:,d}  max out-of-order/node {b.max_out_of_order:,d}"

    def summary(self) -> dict[str, Any]:
        b = self.bookkeeping
        return {"nodes": b.nodes, "max_out_of_order": b.max_out_of_order}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.ingest`` command line."""
    return app.build_parser([IngestProcessor], "python -m consumers.ingest")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.ingest``."""
    return app.main([IngestProcessor], argv, "python -m consumers.ingest")


if __name__ == "__main__":
    sys.exit(main())
