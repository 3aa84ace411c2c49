"""``python -m producers.replay FILE``: replay a recording onto the telemetry topic.

The recording (JSON lines as ``producers.synthetic --output`` writes them, or CSV with a column
map, either one optionally ``.gz``) goes to the telemetry topic keyed by node id, and its
labels file (``FILE.labels.jsonl`` beside it, or ``--labels``) to the labels topic, each label
just before the telemetry of the instant its incident starts. Each node's records are sent in
file order; across nodes records go out in event-time order (:mod:`producers.schedule`), with
the recorded event-time spacing at ``--speed`` times real time (``1`` = real time, ``60``,
or ``max`` = as fast as possible). Event times are sent as recorded, never shifted.

Bad rows (and bad label lines) are reported on stderr with their line numbers and sent to the
dead-letter topic as :class:`stream.records.DeadLetter` records (``source_topic`` is
``file:<path>``, ``partition`` -1, ``offset`` the line number); the replay goes on.

Examples::

    python -m producers.replay data/incidents/fleet.jsonl.gz --speed max
    python -m producers.replay out/day.jsonl --speed 60
    python -m producers.replay legacy.csv --timestamp-column time --set node_id=n-001 \\
        --column packet_loss=loss_pct*0.01 --assume-utc
    python -m producers.replay legacy.csv --mapping map.json --output out/legacy.jsonl
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from producers.replay_run import ReplayOptions, ReplayStats, replay, summary
from producers.replay_sinks import open_sink, serve_metrics
from stream.csvmap import add_csv_arguments, column_map_from_args
from stream.errors import DwcpError
from stream.recordings import Recording, labels_path_for, read_labels
from stream.settings import Settings
from stream.shutdown import handle_signals

log = logging.getLogger("producers.replay")


def _speed(text: str) -> float:
    if text.lower() in ("max", "0", "inf", "fast"):
        return 0.0
    try:
        value = float(text.lower().removesuffix("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a speed: {text!r} (a number like 1, 60, or max)"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"speed must be > 0 or 'max', got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m producers.replay`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m producers.replay",
        description=(
            "Replay a telemetry recording (JSON lines or CSV, optionally .gz) onto the telemetry "
            "topic, keyed by node_id, with its labels file onto the labels topic. Each node's "
            "records keep their file order and the recorded event-time spacing, scaled by "
            "--speed. Bad rows are reported with line numbers and go to the dead-letter topic; "
            "the replay continues."
        ),
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable. "
        "Start a local broker with: bash scripts/kafka-local.sh start",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="recording(s), replayed one after another"
    )
    g = p.add_argument_group("pace")
    g.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="event seconds per wall second: 1 = real time (default), 60 = 60x, max = as fast as possible",
    )
    g.add_argument(
        "--reorder-window",
        type=float,
        default=300.0,
        help="event seconds of look-ahead used to send records across nodes in event-time "
        "order (default 300); each node's records always keep their file order",
    )
    g.add_argument(
        "--progress-interval",
        type=float,
        default=1.0,
        help="seconds between progress updates; 0 = none",
    )
    g = p.add_argument_group("labels")
    g.add_argument(
        "--labels",
        metavar="FILE.jsonl",
        help="labels file (default: FILE.labels.jsonl beside FILE, if present)",
    )
    g.add_argument("--no-labels", action="store_true", help="do not replay any labels")
    add_csv_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        metavar="FILE.jsonl",
        help="write telemetry JSON lines here ('-' = stdout) instead of Kafka (labels to FILE.labels.jsonl)",
    )
    g.add_argument(
        "--dead-letter-output",
        metavar="FILE.jsonl",
        help="also write dead letters here as JSON lines",
    )
    g.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing topics before producing",
    )
    g.add_argument(
        "--max-errors-shown",
        type=int,
        default=20,
        help="bad rows reported one by one on stderr (default 20; all go to the dead-letter topic)",
    )
    Settings.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    total = ReplayStats()
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        cmap = column_map_from_args(args)
        recordings = [
            Recording(f, args.format, cmap, settings.max_record_bytes) for f in args.files
        ]
        sink = open_sink(args, settings)
        server = serve_metrics(sink, settings) if settings.metrics_port and not args.output else None
        options = ReplayOptions(
            speed=args.speed,
            window_s=args.reorder_window,
            progress_every_s=args.progress_interval,
            max_errors_shown=args.max_errors_shown,
        )
        try:
            with handle_signals(stop.set):
                for rec in recordings:
                    if stop.is_set():
                        break
                    labels, bad_labels, labels_file = [], [], None
                    if not args.no_labels:
                        labels_file = args.labels or labels_path_for(rec.path)
                        if os.path.exists(labels_file):
                            labels, bad_labels = read_labels(labels_file)
                        elif args.labels:
                            raise FileNotFoundError(f"labels file {args.labels} does not exist")
                        else:
                            labels_file = None
                    stats = replay(
                        rec,
                        sink,
                        options,
                        stop,
                        labels=labels,
                        bad_labels=bad_labels,
                        labels_path=labels_file,
                        out=sys.stderr,
                    )
                    print(summary(stats, rec.path), file=sys.stderr)
                    total.add(stats)
        finally:
            sink.close()
            if server is not None:
                server.close()
    except (DwcpError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if len(args.files) > 1:
        print(summary(total, f"{len(args.files)} files"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
