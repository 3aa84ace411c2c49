"""``python -m producers.synthetic``: a simulated DWCP fleet streaming telemetry and incidents.

Every node reports one record per link per sample interval of event time; incidents are
injected at random and announced on the labels topic (and/or a labels file) when they start.
See :mod:`producers.fleet` for the telemetry model and :mod:`producers.incidents` for the
incident signatures. The same seed and options give a byte-identical stream.

Examples::

    python -m producers.synthetic --output out/day.jsonl --rate 0 --count 1000000
    python -m producers.synthetic --rate 2000 --speedup 60           # to Kafka, paced
    python -m producers.synthetic --backend confluent --rate 0 --duration 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence

from producers.config import DEFAULT_START, THROUGHPUT_MODELS, FleetConfig
from producers.corrupt import CorruptingSink
from producers.runner import Limits, run, summary
from producers.sinks import FileSink, KafkaSink, MeteredSink, Sink, default_labels_path
from stream.errors import DwcpError
from stream.metrics import Health, Metrics, MetricsServer
from stream.records import CATEGORIES
from stream.settings import Settings
from stream.shutdown import handle_signals

log = logging.getLogger("producers.synthetic")


def _start_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a UTC offset or Z: {text!r}")
    return t.astimezone(dt.UTC)


def _non_negative(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def _categories(text: str) -> tuple[str, ...]:
    cats = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in cats if c not in CATEGORIES]
    if bad or not cats:
        raise argparse.ArgumentTypeError(
            f"unknown categories {bad} (known: {','.join(CATEGORIES)})"
        )
    return cats


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` unless the help already names its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m producers.synthetic`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m producers.synthetic",
        description=(
            "Simulate a fleet of DWCP nodes and stream their telemetry (one JSON record per link "
            "per sample interval, keyed by node_id) to the telemetry topic, with injected "
            "incidents (memory_leak, disk_full, crash, network_failure, consensus_degradation) "
            "announced on the labels topic. With --output it writes JSON-lines files instead "
            "of using Kafka. Same --seed and options -> byte-identical stream."
        ),
        epilog="Stop with Ctrl-C or SIGTERM: records in flight are flushed and a summary printed.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("fleet and incidents")
    g.add_argument("--nodes", type=int, default=50, help="number of nodes")
    g.add_argument("--regions", type=int, default=4, help="regions the nodes are spread over (1-7)")
    g.add_argument("--azs", type=int, default=3, help="availability zones per region (1-6)")
    g.add_argument(
        "--links",
        type=int,
        default=4,
        help="links (peers) per node; one record per link per interval",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seed of all randomness (topology, noise, incidents)"
    )
    g.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds of event time between two samples of one link",
    )
    g.add_argument(
        "--start",
        type=_start_time,
        default=DEFAULT_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
        help="event time of the first sample (RFC 3339 with Z or an offset)",
    )
    g.add_argument(
        "--incident-rate",
        type=_non_negative(float),
        default=0.1,
        help="incidents per node per hour of EVENT time (0 = none); a node has at "
        "most one at a time, plus a 10 min cool-down after each",
    )
    g.add_argument(
        "--categories",
        type=_categories,
        default=",".join(CATEGORIES),
        help="comma-separated incident categories to inject",
    )
    g.add_argument(
        "--throughput-model",
        choices=THROUGHPUT_MODELS,
        default="classic",
        help="classic: goodput follows its drivers at once (what the published figures used); "
        "tcp: a TCP-like sender ramps up to it over an RTT-dependent time, backs off on loss "
        "events, and congestion episodes hold for minutes (see producers/fleet.py and "
        "bench/bench_throughput_shape.py)",
    )
    g = p.add_argument_group("pace and limits")
    g.add_argument(
        "--rate",
        type=_non_negative(float),
        default=2000.0,
        help="max events (records) per second of wall time; 0 = as fast as possible",
    )
    g.add_argument(
        "--speedup",
        type=_non_negative(float),
        default=0.0,
        help="event time advances at most this many times faster than wall time "
        "(1 = real time); 0 = no such limit. Applies with --rate; the slower wins",
    )
    g.add_argument(
        "--duration",
        type=_non_negative(float),
        default=None,
        help="stop after this many seconds of wall time (default: no limit)",
    )
    g.add_argument(
        "--count",
        type=_non_negative(int),
        default=None,
        help="stop after this many records (default: no limit)",
    )
    g.add_argument(
        "--progress-interval",
        type=_non_negative(float),
        default=1.0,
        help="seconds between progress lines on stderr; 0 = none",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        metavar="FILE.jsonl",
        help="write telemetry JSON lines to this file ('-' = stdout) instead of Kafka",
    )
    g.add_argument(
        "--labels-output",
        metavar="FILE.jsonl",
        help="also write incident labels as JSON lines here (default with --output: "
        "<name>.labels.jsonl next to it; with Kafka: no file)",
    )
    g.add_argument(
        "--bad-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="replace this fraction of telemetry records with malformed ones (not JSON, wrong "
        "type, missing node_id, NaN, out of range, oversized) to exercise dead-letter handling",
    )
    g.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing topics (stream.topics.ensure_topics) before producing",
    )
    Settings.add_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    return FleetConfig(
        nodes=args.nodes,
        regions=args.regions,
        azs_per_region=args.azs,
        links_per_node=args.links,
        interval_s=args.interval,
        start=args.start,
        seed=args.seed,
        incident_rate=args.incident_rate,
        categories=args.categories,
        throughput_model=args.throughput_model,
    )


def _open_sink(args: argparse.Namespace, settings: Settings | None) -> Sink:
    if args.output:
        labels = args.labels_output
        if labels is None and args.output != "-":
            labels = default_labels_path(args.output)
        return FileSink(args.output, labels)
    assert settings is not None
    from stream.kafka import make_producer  # Kafka only when it is used
    from stream.topics import ensure_topics

    if not args.no_create_topics:
        ensure_topics(settings)
    return KafkaSink(
        make_producer(settings),
        settings.topic("telemetry"),
        settings.topic("labels"),
        args.labels_output,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        config = config_from_args(args)
        limits = Limits(
            count=args.count, duration_s=args.duration, rate=args.rate, speedup=args.speedup
        )
        sink = _open_sink(args, None if args.output else settings)
        if args.bad_rate > 0:
            sink = CorruptingSink(sink, args.bad_rate, seed=args.seed)
        server = None
        if settings.metrics_port:  # /metrics, /healthz and /readyz while it produces
            metrics, health = Metrics(), Health()
            sink = MeteredSink(
                sink, metrics, health, (settings.topic("telemetry"), settings.topic("labels"))
            )
            server = MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port)
        try:
            with handle_signals(stop.set):
                stats = run(
                    config,
                    sink,
                    limits,
                    stop,
                    progress=sys.stderr,
                    progress_every_s=args.progress_interval,
                )
        finally:
            sink.close()
            if server is not None:
                server.close()
    except (DwcpError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(stats, config), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
