"""The pipeline's five topics: create them idempotently, list them.

Every topic is keyed so that what must stay in order shares a partition:

========================  ==============  ================================================
logical name              key             why
========================  ==============  ================================================
``telemetry``             ``node_id``     one node's samples land on one partition, so a
                                          consumer sees each node's samples in produce
                                          order (Kafka orders only within a partition)
``labels``                ``node_id``     ground truth next to the node it describes
``alerts``                ``node_id``     an incident's open/update/resolved stay ordered
``predictions``           ``node_id``     forecasts per node/link in event order
``dead-letter``           original key    a rejected record keeps its source's key
========================  ==============  ================================================

The wire name is ``Settings.topic_prefix + name`` (``dwcp.telemetry`` by default).

Command line::

    python -m stream.topics create [--partitions N]
    python -m stream.topics list
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from stream.errors import DwcpError
from stream.kafka import make_admin
from stream.settings import TOPICS, Settings

#: How each topic is keyed (see the module docstring).
TOPIC_KEYS: dict[str, str] = {
    "telemetry": "node_id",
    "labels": "node_id",
    "alerts": "node_id",
    "predictions": "node_id",
    "dead-letter": "key of the rejected record",
}


def ensure_topics(
    settings: Settings, partitions: int | None = None, timeout_s: float = 10.0
) -> dict[str, bool]:
    """Create the five topics of :data:`stream.settings.TOPICS` unless they exist.

    Parameters
    ----------
    settings
        Connection settings; ``settings.topic(name)`` gives each wire name and
        ``settings.replication_factor`` the replication.
    partitions
        Partitions per new topic (default ``settings.partitions``). Existing topics are left
        as they are, whatever their partition count.
    timeout_s
        How long to wait for the broker.

    Returns
    -------
    dict[str, bool]
        Wire name -> ``True`` if created by this call, ``False`` if it already existed.

    Raises
    ------
    stream.errors.KafkaUnavailableError
        If the broker cannot be reached (the address is in the message).
    stream.errors.TopicError
        If the broker refuses to create a topic.
    """
    count = partitions or settings.partitions
    names = [settings.topic(t) for t in TOPICS]
    with make_admin(settings, timeout_s=timeout_s) as admin:
        existing = admin.list_topics()
        missing = {n: count for n in names if n not in existing}
        created = admin.create_topics(missing, settings.replication_factor)
    return {n: created.get(n, False) for n in names}


def describe_topics(settings: Settings, timeout_s: float = 10.0) -> dict[str, int | None]:
    """Wire name -> partition count of the five topics (``None`` if missing)."""
    with make_admin(settings, timeout_s=timeout_s) as admin:
        existing = admin.list_topics()
    return {settings.topic(t): existing.get(settings.topic(t)) for t in TOPICS}


def delete_topics(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Delete those of the five topics that exist; return their wire names."""
    with make_admin(settings, timeout_s=timeout_s) as admin:
        existing = admin.list_topics()
        names = [settings.topic(t) for t in TOPICS if settings.topic(t) in existing]
        if names:
            admin.delete_topics(names)
    return names


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m stream.topics`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m stream.topics",
        description=(
            "Create or list the pipeline's five Kafka topics (telemetry, labels, alerts, "
            "predictions, dead-letter), named <topic-prefix><name>. 'create' is idempotent: "
            "existing topics are reported and left unchanged. Telemetry is keyed by node_id "
            "so each node's samples stay in order on one partition."
        ),
        epilog="Every flag can also be set as a DWCP_<NAME> environment variable, e.g. "
        "DWCP_BOOTSTRAP_SERVERS=k1:9092. Start a local broker with: bash scripts/kafka-local.sh start",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{create,list,delete}")
    create = sub.add_parser("create", help="create missing topics (idempotent)")
    create.add_argument(
        "--partitions", type=int, help="partitions per new topic (default DWCP_PARTITIONS or 6)"
    )
    create.add_argument(
        "--replication-factor", type=int, help="replication per new topic (default 1)"
    )
    sub.add_parser("list", help="show the five topics and their partition counts")
    delete = sub.add_parser("delete", help="delete the five topics of this prefix (needs --yes)")
    delete.add_argument("--yes", action="store_true", help="really delete them and their data")
    for p in (create, sub.choices["list"], delete):
        p.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            help="seconds to wait for the broker (default 10)",
        )
        Settings.add_arguments(p)
    return parser


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
        if args.command == "create":
            result = ensure_topics(settings, args.partitions, args.timeout)
            for name, created in result.items():
                print(f"{name:40s} {'created' if created else 'exists'}")
        elif args.command == "delete":
            if not args.yes:
                print("error: delete removes the topics and all their data; add --yes", file=sys.stderr)
                return 2
            for name in delete_topics(settings, args.timeout):
                print(f"{name:40s} deleted")
        else:
            for name, parts in describe_topics(settings, args.timeout).items():
                print(f"{name:40s} {'missing' if parts is None else f'{parts} partition(s)'}")
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
