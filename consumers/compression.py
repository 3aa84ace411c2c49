"""``python -m consumers.compression``: recommends each link's compression codec, on the stream.

Follows the telemetry topic per link (``node_id`` -> ``peer_id``). For every record the policy
network (:class:`models.compression.policy.CompressionPolicy`, numpy forward pass) picks an
action (none, LZ4 or a zstd level). When a link's choice changes, and the transfer-time model
built on the measured codec table expects the new choice to be at least ``--min-improvement``
faster than the link's current one, a :class:`stream.records.Prediction` goes to the predictions
topic: ``kind="compression_choice"``, ``value`` = the new choice's expected transfer-time gain,
for the state at hand, over the best single fixed codec of the training states (``baseline``,
by mean relative time: zstd-3 with the committed table); ``extra`` = codec, level, action,
confidence, expected time, the teacher's best action and time, ``regret`` (expected time over
the best, minus 1), gain over no compression, previous choice and model version.

The policy keeps learning in micro-batches: every ``--train-every`` usable records it takes
a few gradient steps on them (labelled by the transfer-time model, the same teacher as in
training) mixed with a replay sample of older states. Before learning from a record it is
scored (prequential agreement with the teacher, shown on the stats line).

State lives in ``<state_dir>/compression/``: ``policy.json`` (the portable export, also what
the Go side loads) and ``links.json`` (each link's current choice). Both are written when
the loop stops (after its final commit); ``policy.json`` also after a micro-batch update at
most every ``--checkpoint-interval`` seconds. On start they are restored; without a
checkpoint it starts from the shipped starting policy (``data/models/compression-policy.json``,
made by ``python -m consumers.compression --export-policy FILE``), so it decides from its first
record; with ``--starting-policy ''`` (or no such file) it first trains on simulated fleet states
(``--bootstrap-*``, 30-55 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.compression.selector import Decision, LinkSelector
from models.compression.states import state_matrix
from stream.errors import CheckpointError, DwcpError
from stream.kafka import Message
from stream.loop import LoopStats, Output, run_consumer
from stream.records import Prediction, encode
from stream.settings import Settings

log = logging.getLogger("consumers.compression")
KIND = "compression_choice"
#: The shipped starting policy: what a consumer without a checkpoint starts from.
STARTING_POLICY = Path(__file__).resolve().parent.parent / "data" / "models" / "compression-policy.json"


class CompressionConsumer:
    """The loop handler: telemetry -> link states -> switches -> Prediction outputs."""

    def __init__(self, selector: LinkSelector, topic: str) -> None:
        self.selector, self.topic = selector, topic
        self.skipped = self.published = 0

    @property
    def policy(self) -> Any:
        return self.selector.policy

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Decide every usable record; one Prediction per link whose choice changed."""
        recs = [rec for _msg, rec in batch]
        states, ok = state_matrix(recs)
        rows = np.flatnonzero(ok)
        self.skipped += len(recs) - len(rows)
        links = [f"{recs[i].node_id}>{recs[i].peer_id or ''}" for i in rows]
        before = self.policy.updates_
        outputs = [
            self._output(recs[rows[d.row]], d) for d in self.selector.decide(links, states[rows])
        ]
        if self.policy.updates_ != before:
            log.info("micro-batch update %d -> %s", self.policy.updates_, self.policy.version)
        self.published += len(outputs)
        return outputs

    def _output(self, rec: Any, d: Decision) -> Output:
        policy, t = self.policy, d.times
        names, act = policy.names, policy.transfer.table.actions[d.action]
        base, best = names.index(policy.best_fixed_), int(t.argmin())
        pred = Prediction(
            kind=KIND,
            node_id=rec.node_id,
            peer_id=rec.peer_id,
            event_time=rec.timestamp,
            model_version=policy.version,
            value=float(1.0 - t[d.action] / t[base]),
            target="compression",
            extra={
                "codec": act.codec,
                "level": act.level,
                "action": act.name,
                "confidence": round(d.confidence, 6),
                "expected_time_s": float(t[d.action]),
                "baseline": names[base],
                "baseline_time_s": float(t[base]),
                "gain_vs_none": float(1.0 - t[d.action] / t[0]),
                "best_action": names[best],
                "best_time_s": float(t[best]),
                "regret": float(t[d.action] / t[best] - 1.0),
                "previous": names[d.previous] if d.previous is not None else None,
                "transfer_mib": policy.transfer.transfer_mib,
                "model_version": policy.version,
            },
        )
        return Output(self.topic, rec.node_id.encode(), encode(pred))


# -- checkpoints ---------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(directory: Path, selector: LinkSelector, *, links: bool = True) -> None:
    """Write ``policy.json`` (and ``links.json``) atomically under ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write(directory / "policy.json", selector.policy.to_portable().to_json())
        if links:
            names = selector.policy.names
            choices = {k: names[v] for k, v in selector.current.items()}
            _write(directory / "links.json", json.dumps(choices, sort_keys=True))
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the compression checkpoint in {directory}: {exc}"
        ) from exc


def load_checkpoint(directory: Path) -> tuple[Any, dict[str, str]] | None:
    """``(PortablePolicy, links)`` from ``directory``, or None when there is no checkpoint."""
    from models.compression.portable import PortablePolicy

    path = directory / "policy.json"
    if not path.exists():
        return None
    try:
        portable = PortablePolicy.from_json(path.read_text())
        links_path = directory / "links.json"
        links = json.loads(links_path.read_text()) if links_path.exists() else {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot restore the compression checkpoint {path}: {exc}") from exc
    return portable, links


def train_bootstrap_policy(args: argparse.Namespace, out: TextIO) -> Any:
    """A policy trained on simulated fleet states (``--bootstrap-*``)."""
    from models.compression.dataset import training_states
    from models.compression.policy import CompressionPolicy

    print("compression: training on simulated fleet states", file=out, flush=True)
    seeds = tuple(range(1, args.bootstrap_fleets + 1))
    states = training_states(seeds, nodes=args.bootstrap_nodes, hours=args.bootstrap_hours)
    policy = CompressionPolicy(epochs=args.bootstrap_epochs).fit(states)
    print(
        f"compression: trained {policy.version} on {len(states):,d} states in "
        f"{policy.fit_seconds_:.1f}s",
        file=out,
        flush=True,
    )
    return policy


def starting_policy(args: argparse.Namespace, out: TextIO) -> Any:
    """The shipped starting policy (``--starting-policy``), else a freshly trained one."""
    from models.compression.policy import CompressionPolicy

    path = Path(args.starting_policy) if args.starting_policy else None
    if path is None or not path.is_file():
        if path is not None:
            print(f"compression: no starting policy at {path}", file=out, flush=True)
        return train_bootstrap_policy(args, out)
    portable = _read_portable(path)
    print(f"compression: no checkpoint; starting from {portable.version} ({path})", file=out, flush=True)
    return CompressionPolicy.from_portable(portable)


def _read_portable(path: Path) -> Any:
    from models.compression.portable import PortablePolicy

    try:
        return PortablePolicy.from_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the starting policy {path}: {exc}") from exc


def build_selector(settings: Settings, args: argparse.Namespace, out: TextIO) -> LinkSelector:
    """Restore the checkpoint, else start from the shipped (or a freshly trained) policy."""
    from models.compression.policy import CompressionPolicy

    directory = Path(settings.state_dir) / "compression"
    restored = load_checkpoint(directory)
    if restored:
        portable, links = restored
        policy = CompressionPolicy.from_portable(portable)
        print(f"compression: restored {portable.version} from {directory}", file=out, flush=True)
    else:
        policy = starting_policy(args, out)
        links = {}
    selector = LinkSelector(
        policy,
        min_improvement=args.min_improvement,
        train_every=args.train_every,
        train=not args.no_train,
    )
    index = {name: i for i, name in enumerate(policy.names)}
    selector.current = {k: index[v] for k, v in links.items() if v in index}
    if not restored:
        save_checkpoint(directory, selector)
    return selector


def stats_line(stats: LoopStats, c: CompressionConsumer) -> str:
    """The live stats line."""
    sel = c.selector
    return (
        f"compression: {stats.records_in:>9,d} events  {stats.window_rate:>8,.0f} ev/s  "
        f"links {len(sel.current):,d}  published {c.published:,d}  "
        f"agreement {sel.agreement:.2%}  updates {c.policy.updates_}  "
        f"model {c.policy.version}  ({stats.elapsed:.1f}s)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.compression`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.compression",
        description="Recommend each link's compression codec from its telemetry; publish to the "
        "predictions topic when a link's best choice changes; keep training in micro-batches.",
        epilog="Every connection flag can also be set as a DWCP_<NAME> environment variable.",
    )
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest record")
    p.add_argument("--max-seconds", type=float, help="stop after this many seconds")
    p.add_argument("--max-records", type=int, help="stop after this many records")
    p.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between stats lines")
    p.add_argument("--batch-size", type=int, help="records per poll (default DWCP_BATCH_SIZE)")
    p.add_argument(
        "--state-dir", help="checkpoint directory (default DWCP_STATE_DIR or .cache/state)"
    )
    p.add_argument(
        "--min-improvement",
        type=float,
        default=0.02,
        help="switch a link only if the new choice is expected this much faster (default 0.02)",
    )
    p.add_argument("--train-every", type=int, default=4096, help="records per micro-batch update")
    p.add_argument("--no-train", action="store_true", help="decide only; never update the policy")
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        default=60.0,
        help="seconds between policy checkpoints after updates (default 60)",
    )
    g = p.add_argument_group("first start (no checkpoint): the starting policy")
    g.add_argument(
        "--starting-policy",
        default=str(STARTING_POLICY),
        metavar="FILE.json",
        help="portable policy to start from without a checkpoint ('' = train on simulated "
        "fleet states with the --bootstrap-* settings; default: the shipped one)",
    )
    g.add_argument(
        "--export-policy",
        metavar="FILE.json",
        help="train on simulated fleet states (--bootstrap-*), write the portable policy here "
        "and exit (how the shipped starting policy is made)",
    )
    g.add_argument("--bootstrap-fleets", type=int, default=4, help="fleets (seeds 1..N; default 4)")
    g.add_argument("--bootstrap-nodes", type=int, default=100, help="nodes per fleet (default 100)")
    g.add_argument(
        "--bootstrap-hours", type=float, default=24.0, help="hours per fleet (default 24)"
    )
    g.add_argument("--bootstrap-epochs", type=int, default=30, help="training epochs (default 30)")
    Settings.add_arguments(p)
    return p


def run(
    settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout
) -> tuple[LoopStats, CompressionConsumer]:
    """Run the consumer until a limit or a signal stops it."""
    selector = build_selector(settings, args, out)
    consumer = CompressionConsumer(selector, settings.topic("predictions"))
    directory = Path(settings.state_dir) / "compression"
    saved = {"updates": selector.policy.updates_, "at": time.monotonic()}

    def handler(batch: list[tuple[Message, Any]]) -> list[Output]:
        outputs = consumer.handle(batch)
        now = time.monotonic()
        updated = selector.policy.updates_ != saved["updates"]
        if updated and now - saved["at"] >= args.checkpoint_interval:
            save_checkpoint(directory, selector, links=False)  # links only after a commit
            saved.update(updates=selector.policy.updates_, at=now)
        return outputs

    stats = run_consumer(
        settings,
        [settings.topic("telemetry")],
        handler,
        group_id=settings.consumer_group("compression"),
        from_beginning=args.from_beginning,
        max_records=args.max_records,
        max_seconds=args.max_seconds,
        idle_timeout=args.idle_timeout,
        progress_interval=args.interval,
        on_progress=lambda s: print(stats_line(s, consumer), file=out, flush=True),
        on_close=lambda: save_checkpoint(directory, selector),
    )
    return stats, consumer


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    if args.export_policy:
        policy = train_bootstrap_policy(args, sys.stderr)
        Path(args.export_policy).parent.mkdir(parents=True, exist_ok=True)
        _write(Path(args.export_policy), policy.to_portable().to_json())
        print(f"compression: wrote {policy.version} to {args.export_policy}", file=sys.stderr)
        return 0
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # small matrices: one BLAS thread is faster than two fighting
        stats, consumer = run(settings, args)
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"compression: stopped ({stats.stop_reason}) after {stats.records_in:,d} events, "
        f"{consumer.published:,d} recommendations, agreement {consumer.selector.agreement:.2%}, "
        f"{consumer.policy.updates_} updates",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
