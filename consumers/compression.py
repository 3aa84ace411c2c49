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

It runs in the application shell (:mod:`stream.app`): from Kafka or ``--from-file``, alone or
beside other processors (``python -m consumers run ... compression``). Its state (the portable
policy JSON, the document the Go side loads, and each link's current choice) is checkpointed
by the shell's one rule (after a commit, on revoke, on close). Without a checkpoint it starts
from the shipped starting policy (``data/models/compression-policy.json``,
made by ``python -m consumers.compression --export-policy FILE``), so it decides from its first
record; with ``--starting-policy ''`` (or no such file) it first trains on simulated fleet states
(``--bootstrap-*``, 30-55 s on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.compression.selector import Decision, LinkSelector
from models.compression.states import state_matrix
from stream import app
from stream.errors import CheckpointError
from stream.kafka import Message
from stream.loop import Output
from stream.records import Prediction, encode
from stream.settings import Settings

log = logging.getLogger("consumers.compression")
KIND = "compression_choice"
#: The shipped starting policy: what a consumer without a checkpoint starts from (beside the
#: source tree; an installed package, as in the Docker image, finds it under the working folder).
_SHIPPED = Path("data") / "models" / "compression-policy.json"
STARTING_POLICY = next(
    (p for p in (Path(__file__).resolve().parent.parent / _SHIPPED, Path.cwd() / _SHIPPED) if p.is_file()),
    Path(__file__).resolve().parent.parent / _SHIPPED,
)


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
        version = d.version or policy.version  # the policy that decided (an update may follow)
        names, act = policy.names, policy.transfer.table.actions[d.action]
        base, best = names.index(policy.best_fixed_), int(t.argmin())
        pred = Prediction(
            kind=KIND,
            node_id=rec.node_id,
            peer_id=rec.peer_id,
            event_time=rec.timestamp,
            model_version=version,
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
                "model_version": version,
            },
        )
        return Output(self.topic, rec.node_id.encode(), encode(pred))


# -- building ------------------------------------------------------------------------------
def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_bootstrap_policy(args: argparse.Namespace, out: TextIO) -> Any:
    """A policy trained on simulated fleet states (``--bootstrap-*``)."""
    from models.compression.policy import CompressionPolicy
    from producers.compression_states import training_states

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


def read_portable(path: Path) -> Any:
    """A :class:`~models.compression.portable.PortablePolicy` from a JSON file."""
    from models.compression.portable import PortablePolicy

    try:
        return PortablePolicy.from_json(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the policy {path}: {exc}") from exc


def starting_policy(args: argparse.Namespace, out: TextIO) -> Any:
    """The shipped starting policy (``--starting-policy``), else a freshly trained one."""
    from models.compression.policy import CompressionPolicy

    path = Path(args.starting_policy) if args.starting_policy else None
    if path is None or not path.is_file():
        if path is not None:
            print(f"compression: no starting policy at {path}", file=out, flush=True)
        return train_bootstrap_policy(args, out)
    portable = read_portable(path)
    print(f"compression: starting from {portable.version} ({path})", file=out, flush=True)
    return CompressionPolicy.from_portable(portable)


def build_selector(args: argparse.Namespace, state: Any | None, out: TextIO) -> LinkSelector:
    """The selector from a restored state ``(policy JSON, {link: choice})``, else from the
    starting policy."""
    from models.compression.policy import CompressionPolicy
    from models.compression.portable import PortablePolicy

    links: dict[str, str] = {}
    if state is not None:
        text, links = state
        policy = CompressionPolicy.from_portable(PortablePolicy.from_json(text))
    else:
        policy = starting_policy(args, out)
    selector = LinkSelector(
        policy,
        min_improvement=args.min_improvement,
        train_every=args.train_every,
        update_below=args.update_below,
        train=not args.no_train,
        background=not args.sync_train,
    )
    index = {name: i for i, name in enumerate(policy.names)}
    selector.current = {k: index[v] for k, v in links.items() if v in index}
    return selector


class CompressionProcessor(app.Processor):
    """:class:`CompressionConsumer` in the application shell."""

    name = "compression"
    outputs = ("predictions",)
    description = (
        "Recommend each link's compression codec from its telemetry; publish to the predictions "
        "topic when a link's best choice changes; keep training in micro-batches."
    )

    def __init__(self, settings: Settings, args: argparse.Namespace, state: Any | None) -> None:
        self.selector = build_selector(args, state, sys.stderr)
        self.consumer = CompressionConsumer(self.selector, settings.topic("predictions"))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        p = parser.add_argument_group("compression")
        p.add_argument(
            "--min-improvement",
            type=float,
            default=0.02,
            help="switch a link only if the new choice is expected this much faster (default 0.02)",
        )
        p.add_argument("--train-every", type=int, default=4096, help="records per micro-batch update")
        p.add_argument("--no-train", action="store_true", help="decide only; never update the policy")
        p.add_argument(
            "--update-below",
            type=_share,
            default=0.99,
            metavar="AGREEMENT",
            help="take a due micro-batch update only if the policy agreed with the teacher on at "
            "most this share of its records (default 0.99; 1 = update every time)",
        )
        p.add_argument(
            "--sync-train",
            action="store_true",
            help="run each micro-batch update inline (reproducible: the same records give the "
            "same recommendations); by default it runs beside the stream, which keeps deciding "
            "with the current policy meanwhile",
        )
        g = parser.add_argument_group("compression, first start (no checkpoint): the starting policy")
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
            help="train on simulated fleet states (--bootstrap-*), write the portable policy "
            "here and exit (how the shipped starting policy is made)",
        )
        g.add_argument("--bootstrap-fleets", type=int, default=4, help="fleets (seeds 1..N; default 4)")
        g.add_argument("--bootstrap-nodes", type=int, default=100, help="nodes per fleet (default 100)")
        g.add_argument("--bootstrap-hours", type=float, default=24.0, help="hours per fleet (default 24)")
        g.add_argument("--bootstrap-epochs", type=int, default=30, help="training epochs (default 30)")

    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        return self.consumer.handle(batch)

    def state(self, final: bool = False) -> Any:
        """``(policy JSON, {link: choice})``: the exported policy is replaced in one assignment,
        so a checkpoint taken while an update runs holds the policy before it (on shutdown,
        ``final``, the update finishes first)."""
        if final:
            self.selector.finish(60)
        names = self.selector.policy.names
        links = {k: names[v] for k, v in self.selector.current.items()}
        return self.selector.policy.to_portable().to_json(), links

    @property
    def model_version(self) -> str:
        return str(self.selector.policy.version)

    def status(self) -> str:
        sel, c = self.selector, self.consumer
        return (
            f"compression: links {len(sel.current):,d}  published {c.published:,d}  "
            f"agreement {sel.agreement:.2%}  updates {c.policy.updates_} (skipped "
            f"{sel.updates_skipped})  model {c.policy.version}"
        )

    def close(self) -> None:
        self.selector.finish(60)  # a running update: the process exits once it is done

    def summary(self) -> dict[str, Any]:
        sel, c = self.selector, self.consumer
        return {
            "links": len(sel.current),
            "published": c.published,
            "skipped": c.skipped,
            "agreement": round(sel.agreement, 6),
            "updates": c.policy.updates_,
            "updates_skipped": sel.updates_skipped,
            "model_version": self.model_version,
        }


def _share(text: str) -> float:
    """A share in [0, 1] (``--update-below``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def _configure(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # small matrices: one BLAS thread is faster than two fighting


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.compression`` command line."""
    return app.build_parser([CompressionProcessor], "python -m consumers.compression")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consumers.compression``; ``--export-policy`` trains and writes a policy."""
    args = build_parser().parse_args(argv)
    if args.export_policy:
        policy = train_bootstrap_policy(args, sys.stderr)
        Path(args.export_policy).parent.mkdir(parents=True, exist_ok=True)
        _write(Path(args.export_policy), policy.to_portable().to_json())
        print(f"compression: wrote {policy.version} to {args.export_policy}", file=sys.stderr)
        return 0
    return app.main([CompressionProcessor], argv, "python -m consumers.compression", _configure)


if __name__ == "__main__":
    sys.exit(main())
