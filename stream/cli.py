"""The command line every consumer shares: common flags, several processors' flags told apart
by a name prefix, the settings object and the consumer group of a set of processors."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping, Sequence

from stream.processor import Processor
from stream.settings import Settings

__all__ = ["add_common_arguments", "build_parser", "group_for", "processor_args", "settings_from"]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every consumer has: source, limits, progress, state, connection."""
    g = parser.add_argument_group("source and limits")
    g.add_argument("--from-beginning", action="store_true", help="start at the earliest record")
    g.add_argument(
        "--from-file",
        metavar="FILE",
        help="read a recording (JSON lines or CSV, .gz too) through the same loop instead of "
        "Kafka; outputs and dead letters go to --output-dir as JSON lines",
    )
    g.add_argument(
        "--output-dir",
        metavar="DIR",
        help="with --from-file: write <topic>.jsonl per output topic here (default: count only)",
    )
    g.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    g.add_argument("--max-records", type=int, help="stop after this many records")
    g.add_argument(
        "--idle-timeout",
        type=float,
        help="stop after this many seconds in which no record arrived and none was handed on, "
        "counted only while this member has partitions assigned (joining the group or a "
        "rebalance in progress does not count); records still buffered for event-time order "
        "are then handed on, as at the end of a file. Partitions held by a member that died "
        "are not waited for: after a crash, use more than the broker's session timeout "
        "(45 s by default) or the dead member's share may be left unread",
    )
    g.add_argument("--batch-size", type=int, help="records per poll (default DWCP_BATCH_SIZE)")
    g.add_argument("--interval", type=float, default=5.0, help="seconds between progress lines")
    g.add_argument(
        "--summary", metavar="FILE.json", help="write the processors' final summaries here"
    )
    t = parser.add_argument_group(
        "event time",
        "records are handed to the models in one order that depends only on the records "
        "(event time, then node), whether they come from a file, one partition or many: each "
        "waits until no partition can still bring an earlier one",
    )
    t.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="process each polled batch as it comes instead (a backlog is then read one "
        "partition's hours at a time, and answers depend on the partitioning)",
    )
    t.add_argument(
        "--align-idle-ms",
        type=float,
        default=5000.0,
        help="how long a partition that delivers nothing may hold the others back before it "
        "counts as idle, counting only time spent waiting on the broker (default 5000: "
        "a slow fetch after a rebalance takes longer than a second under load)",
    )
    t.add_argument(
        "--allowed-lateness",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how much older than its partition's newest record a record may arrive and "
        "still be sorted into place; the newest records wait this long in event time before "
        "they are processed. A later record is processed at once and counted late (default 15)",
    )
    t.add_argument(
        "--max-jump",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a record this far ahead of its partition's newest one is held until the next "
        "3 records confirm the jump (a gap in the data); if they do not, it is an outlier and "
        "goes to the dead-letter topic instead of moving event time (default 300)",
    )
    t.add_argument(
        "--max-future",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="live: a record stamped more than this ahead of the wall clock goes to the "
        "dead-letter topic (default 600; raise it for a simulated fleet running faster than "
        "real time from now; never applied to --from-file)",
    )
    s = parser.add_argument_group("state")
    s.add_argument("--state-dir", help="checkpoint folder (default DWCP_STATE_DIR or .cache/state)")
    s.add_argument("--no-checkpoint", action="store_true", help="neither restore nor save state")
    s.add_argument(
        "--state-shards",
        type=int,
        metavar="N",
        help="keep each model's state in N shards of the node keys (murmur2(node) %% N, the "
        "partitioner's hash), checkpointed per shard so that a shard's state follows its "
        "partition to whichever group member is assigned it: several members then give the "
        "one-process answer. N must be a multiple of the telemetry topic's partition count, "
        "the same for every member and every run on one state folder (default "
        "DWCP_STATE_SHARDS or 1: one state for all keys, one member)",
    )
    s.add_argument(
        "--with-state",
        action="store_true",
        help="with --from-file: restore and save checkpoints as a stream run does (default: a "
        "file run starts fresh and saves nothing, so the same file always gives the same answer)",
    )
    s.add_argument(
        "--learn-from",
        metavar="FILE",
        action="append",
        default=[],
        help="before the first record, learn from this history (a recording or CSV read with "
        "the same column mapping, e.g. a training split; repeatable, in order): every model "
        "learns from it as from the stream, its outputs are discarded, and incident and "
        "heartbeat state is reset before the live records. Only on a fresh start: a restored "
        "checkpoint already holds what was learned, so the file is then skipped (logged)",
    )
    s.add_argument(
        "--checkpoint-interval",
        type=float,
        default=60.0,
        help="seconds between checkpoints, each taken right after a commit (default 60)",
    )
    h = parser.add_argument_group("metrics and health (served with --metrics-port)")
    h.add_argument(
        "--liveness-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="/healthz answers 503 once the loop has not completed an iteration for this long "
        "(default 300: longer than a blocking first model fit)",
    )
    from stream.csvmap import add_csv_arguments

    add_csv_arguments(parser)
    Settings.add_arguments(parser)


def build_parser(processors: Sequence[type[Processor]], prog: str) -> argparse.ArgumentParser:
    """The command line of a consumer running ``processors`` (see :meth:`Processor.add_arguments`
    for how several processors' flags are told apart)."""
    names = ", ".join(p.name for p in processors)
    desc = " ".join(p.description for p in processors if p.description) or f"Run {names}."
    p = argparse.ArgumentParser(
        prog=prog,
        description=desc,
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable. "
        "Exit status: 0 done, 1 error (the message names the cause), 130 interrupted.",
    )
    add_common_arguments(p)
    if len(processors) == 1:
        processors[0].add_arguments(p)
        return p
    for proc in processors:
        own = argparse.ArgumentParser(add_help=False)
        proc.add_arguments(own)
        group = p.add_argument_group(f"{proc.name} (each flag prefixed with --{proc.name}.)")
        for action in own._actions:
            prefixed = copy.copy(action)
            prefixed.option_strings = [f"--{proc.name}.{o.lstrip('-')}" for o in action.option_strings]
            prefixed.dest = f"{proc.name}.{action.dest}"
            group._add_action(prefixed)
    return p


def processor_args(args: argparse.Namespace, proc: type[Processor], several: bool) -> argparse.Namespace:
    """The flags as ``proc`` sees them: common flags plus its own, without the name prefix.

    >>> ns = argparse.Namespace(state_dir="s", **{"a.window": 3, "b.window": 5})
    >>> class A(Processor):
    ...     name = "a"
    >>> processor_args(ns, A, True).window, processor_args(ns, A, True).state_dir
    (3, 's')
    """
    if not several:
        return args
    prefix = f"{proc.name}."
    out = argparse.Namespace()
    for key, value in vars(args).items():
        if "." not in key:
            setattr(out, key, value)
        elif key.startswith(prefix):
            setattr(out, key[len(prefix) :], value)
    return out


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The one settings object: ``DWCP_*`` variables, overridden by the flags."""
    return Settings.from_args(
        args,
        environ,
        state_dir=args.state_dir,
        batch_size=args.batch_size,
        state_shards=args.state_shards,
    )


def group_for(settings: Settings, processors: Sequence[type[Processor]]) -> str:
    """``dwcp-<name>`` for one processor, ``dwcp-<a>+<b>...`` for several (or ``group_id``)."""
    return settings.consumer_group("+".join(p.name for p in processors))
