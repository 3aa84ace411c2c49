"""``python -m consumers.ingest``: the first consumer of the telemetry topic.

A consumer-group member that reads telemetry with the shared batch loop
(:mod:`stream.loop`), validates every record, sends bad ones to the dead-letter topic and
prints a live stats line: events/s, dead letters, distinct nodes and the largest per-node
count of out-of-order samples (a sample whose event time is earlier than the node's latest).
Telemetry is keyed by node_id, so each node's samples arrive in produce order; out-of-order
counts therefore measure the producers' event-time disorder, not Kafka's.

Run several copies with the same ``--group-id`` to share the partitions.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from stream.errors import DwcpError
from stream.kafka import Message
from stream.loop import LoopStats, Output, run_consumer
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


def stats_line(stats: LoopStats, state: IngestState) -> str:
    """The live stats line."""
    return (
        f"ingest: {stats.records_in:>10,d} events  {stats.window_rate:>9,.0f} ev/s  "
        f"dead letters {stats.dead_letters:,d}  nodes {state.nodes:,d}  "
        f"max out-of-order/node {state.max_out_of_order:,d}  ({stats.elapsed:.1f}s)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.ingest`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m consumers.ingest",
        description="Consume the telemetry topic as a consumer-group member: validate every record, "
        "send bad ones (with reasons and origin) to the dead-letter topic, commit offsets only after "
        "that is flushed (at-least-once), and print a live stats line. Ctrl-C / SIGTERM finish the "
        "current batch, commit and exit.",
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable. "
        "Start a local broker with: bash scripts/kafka-local.sh start",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest record when the group has no committed offset",
    )
    parser.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--max-records", type=int, help="stop after this many records")
    parser.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without records"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between stats lines (default 2)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="records per poll (default DWCP_BATCH_SIZE or 5000)"
    )
    Settings.add_arguments(parser)
    return parser


def run(
    settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout
) -> tuple[LoopStats, IngestState]:
    """Run the ingest consumer until a limit or a signal stops it."""
    state = IngestState()
    stats = run_consumer(
        settings,
        [settings.topic("telemetry")],
        state.handle,
        group_id=settings.consumer_group("ingest"),
        from_beginning=args.from_beginning,
        max_records=args.max_records,
        max_seconds=args.max_seconds,
        idle_timeout=args.idle_timeout,
        progress_interval=args.interval,
        on_progress=lambda s: print(stats_line(s, state), file=out, flush=True),
    )
    return stats, state


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":  # the clients' INFO lines are connection chatter
            logging.getLogger("kafka").setLevel(logging.WARNING)
        stats, _state = run(settings, args)
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"ingest: stopped ({stats.stop_reason}) after {stats.records_in:,d} events, "
        f"{stats.dead_letters:,d} dead letters, mean {stats.rate:,.0f} ev/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
