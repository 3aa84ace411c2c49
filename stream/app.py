"""The one application shell every consumer runs in: processors plugged into one loop.

A model is plugged in as a :class:`Processor` (its name, the topics it writes, its flags, how
it is built from a restored state, ``handle(batch) -> outputs``, a picklable ``state()``, a
status line and a summary). :func:`main` owns everything around it, once for all consumers:

* the common flags (:func:`add_common_arguments`), the one :class:`~stream.settings.Settings`
  object, logging, the mapping of errors to exit codes (``1`` for a
  :class:`~stream.errors.DwcpError` with its message, ``130`` for Ctrl-C) and the progress line;
* the source: the telemetry topic in a consumer group, or ``--from-file`` (a recording through
  :class:`~stream.kafka.files.FileConsumer`, outputs and dead letters as JSON lines under
  ``--output-dir`` through :class:`~stream.kafka.files.FileProducer`), so a file runs the exact
  loop, validation, dead-lettering and processors that Kafka does;
* several processors in one process (``python -m consumers run reliability bandwidth``): one
  poll and one validation per record, the batch committed once every processor's outputs are
  flushed, a bad record dead-lettered once for the group;
* **one checkpoint rule**: after a commit, at most every ``--checkpoint-interval`` seconds (and
  at the first commit of a run that restored nothing); on
  revoke (the revoked partitions' offsets are committed by then); and on close, after the final
  commit. Quix Streams' ``Checkpoint.commit`` order: flush produced records, commit offsets,
  then state. The state is pickled on the loop's thread; periodic and new-model checkpoints are
  then written (checksum, files, ``fsync``) on a thread of their own while the loop goes on
  (:class:`~stream.checkpoint.BackgroundWrites`; a crash before they land leaves the previous
  checkpoint, as a kill -9 does), revoke and shutdown ones before the loop continues. One
  layout for every processor (:class:`~stream.checkpoint.CheckpointStore` under
  ``<state_dir>/<name>-<group>/``, the state wrapped with the processor name, its state format,
  its model version and the partition positions it matches); a checkpoint of another processor
  or format is ignored with a warning;
* **state per shard** (``--state-shards N``, :mod:`stream.shards`): each processor keeps one
  state per shard of the node keys, checkpointed per shard; a member restores the shards of
  every partition it is assigned and reads it from their position, and saves them when the
  partition is revoked, so several members of a group give the one-process answer;
* **restarts read from the state, not from the commit**: a checkpoint records, per partition,
  where its state stopped (:meth:`stream.loop.BatchLoop.positions`); after a restart the loop
  seeks there, so records committed after the last checkpoint (a kill -9) reach the state again
  and nothing handed on already is handed on twice (outputs in between repeat, same ids).

Examples
--------
A processor that counts records per node, run over a file:

>>> import tempfile, pathlib
>>> class Count(Processor):
...     name, outputs = "count", ()
...     def __init__(self, settings, args, state):
...         self.n = state or 0
...     def handle(self, batch):
...         self.n += len(batch)
...         return []
...     def state(self, final=False):
...         return self.n
...     def status(self):
...         return f"count {self.n}"
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.jsonl").write_text(
...     '{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-1"}\\n{oops\\n')
>>> app = App([Count], ["--from-file", str(d / "r.jsonl"), "--state-dir", str(d / "s")],
...           environ={})
>>> stats = app.run()
>>> stats.records_in, stats.dead_letters, app.processors[0].n
(2, 1, 1)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from stream import collector
from stream.alignment import Aligner
from stream.checkpoint import BackgroundWrites, CheckpointStore
from stream.cli import add_common_arguments, build_parser, group_for, processor_args, settings_from
from stream.errors import DwcpError
from stream.kafka import Consumer, Message, Producer, TopicPartition, make_consumer, make_producer
from stream.loop import BatchLoop, LoopStats, Output
from stream.metrics import Health, Metrics, MetricsServer
from stream.processor import Processor
from stream.settings import Settings
from stream.shards import ShardSet
from stream.shutdown import handle_signals

__all__ = [
    "App",
    "Processor",
    "add_common_arguments",
    "build_parser",
    "group_for",
    "main",
    "processor_args",
    "settings_from",
]

log = logging.getLogger("stream.app")


#: Checkpoints written beside the loop (see :meth:`App.checkpoint`).
BACKGROUND_WRITES = ("periodic", "new model")


class App:
    """Processors on one source, with the checkpoint rule (see the module docstring)."""

    def __init__(
        self,
        processors: Sequence[type[Processor]],
        argv: Sequence[str] | None = None,
        *,
        prog: str = "python -m consumers",
        environ: Mapping[str, str] | None = None,
        out: Any = None,
        args: argparse.Namespace | None = None,
        settings: Settings | None = None,
    ) -> None:
        if not processors:
            raise DwcpError("no processor to run")
        self.classes = list(processors)
        self.args = args or build_parser(self.classes, prog).parse_args(argv)
        a = self.args
        self.settings = settings or settings_from(a, os.environ if environ is None else environ)
        self.out = out or sys.stderr
        self.group = group_for(self.settings, self.classes)
        self.metrics = Metrics()
        self.health = Health(a.liveness_timeout)
        self.server: MetricsServer | None = None
        if self.settings.metrics_port:  # up before the state is restored: /readyz says so
            self.server = MetricsServer(
                self.metrics, self.health, self.settings.metrics_host, self.settings.metrics_port
            )
        self.stores: dict[str, CheckpointStore | None] = {}
        self.processors: list[Processor] = []
        self._positions: list[Any] = []  # each restored checkpoint's partition positions
        several = len(self.classes) > 1
        self.stateless = a.no_checkpoint or (a.from_file and not a.with_state)
        self.n_shards = self.settings.state_shards
        self.sharded: ShardSet | None = None  # with --state-shards: built once the source is known
        if self.n_shards > 1:
            self._check_shardable()
        for cls in self.classes:
            own = processor_args(a, cls, several)
            store = (
                None
                if self.stateless or self.n_shards > 1  # shards: one store per shard instead
                else CheckpointStore(self.settings.state_dir, f"{cls.name}-{self.group}")
            )
            self.stores[cls.name] = store
            try:
                self.processors.append(cls(self.settings, own, self._restore(cls, store)))
            except BaseException:
                self.close_server()
                raise
        self.views = [self.metrics.processor(p.name) for p in self.processors]
        self.alerts_topic = self.settings.topic("alerts")
        self._observe_due = 0.0
        self.health.restored = True
        # nothing restored: checkpoint at the first commit, or a kill -9 before the first
        # periodic checkpoint would leave offsets committed that no saved state has seen
        self.last_checkpoint = time.monotonic() if self._positions else float("-inf")
        self.loop: BatchLoop | None = None
        self.writer = BackgroundWrites()

    # -- state ---------------------------------------------------------------------------------
    def _check_shardable(self) -> None:
        a, n = self.args, self.n_shards
        if not a.align:
            raise DwcpError(f"--state-shards {n} needs event-time alignment (drop --no-align): "
                            "a shard's state is restored with its partition's position")
        if a.learn_from:
            raise DwcpError(f"--state-shards {n} cannot be combined with --learn-from yet: "
                            "learn the history in a --with-state file run with the same shards")
        names = [c.name for c in self.classes if not c.shardable]
        if names:
            raise DwcpError(f"--state-shards {n}: {', '.join(names)} keeps one state for all keys "
                            "and cannot be sharded yet; run it without --state-shards")

    def _shard_store(self, name: str, shard: int) -> CheckpointStore | None:
        if self.stateless:
            return None
        folder = f"{name}-{self.group}/shards-{self.n_shards}/shard-{shard:03d}"
        return CheckpointStore(self.settings.state_dir, folder)

    def _partitions(self) -> int:
        """The telemetry topic's partition count (1 for a file)."""
        if self.args.from_file:
            return 1
        from stream.kafka import make_admin

        topic = self.settings.topic("telemetry")
        with make_admin(self.settings) as admin:
            got = admin.list_topics().get(topic)
        if got is None:
            raise DwcpError(f"--state-shards: topic {topic} does not exist (create it with "
                            "python -m stream.topics create)")
        return got

    def _on_assignment(self, assigned: set[TopicPartition]) -> dict[Any, Any]:
        assert self.sharded is not None
        return self.sharded.assign(assigned)  # {} for a file: it is read whole

    def _restore(self, cls: type[Processor], store: CheckpointStore | None) -> Any | None:
        if store is None:
            return None
        got = store.load()
        if got is None:
            self._say(f"{cls.name}: no checkpoint, starting fresh")
            return None
        wrapped, meta = got
        if (
            not isinstance(wrapped, dict)
            or wrapped.get("processor") != cls.name
            or wrapped.get("format") != cls.state_format
        ):
            log.warning(
                "%s: checkpoint v%s in %s is not a format-%d %s checkpoint; starting fresh",
                cls.name,
                meta.get("version"),
                store.dir if store else "",
                cls.state_format,
                cls.name,
            )
            return None
        self._say(
            f"{cls.name}: restored checkpoint v{meta['version']} ({wrapped.get('model_version')})"
        )
        self._positions.append(wrapped.get("positions"))
        return wrapped["state"]

    def start_positions(self) -> dict[Any, Any]:
        """Where the restored state stopped, per partition: the loop reads from there (not from
        the committed offsets, which may be newer after a kill -9). Only when every processor
        restored the same positions: otherwise their states disagree and the committed
        offsets are used."""
        got = self._positions
        if not got or self.args.from_file or len(got) != len(self.processors):
            return {}
        first = got[0]
        if not first or any(p != first for p in got[1:]):
            if len(got) > 1:
                log.warning("the processors' checkpoints stopped at different offsets: "
                            "reading from the committed offsets")
            return {}
        return dict(first)

    def checkpoint(self, why: str, final: bool = False) -> None:
        """Save every processor's state (call only when it matches the committed offsets)."""
        self.last_checkpoint = time.monotonic()
        positions = self.loop.positions() if self.loop is not None else {}
        if self.sharded is not None:
            for proc in self.processors:
                proc.checkpoint_due = False
            self.sharded.save(positions, why, final=final)
            return
        self.writer.wait()  # the last one is on disk first: versions are read from the folder
        # periodic and new-model checkpoints are pickled here and written (checksum, files,
        # fsync) beside the loop; revoke and shutdown ones before the partitions move or the
        # process ends. A write that failed raises at the next checkpoint
        background = why in BACKGROUND_WRITES
        writes = []
        for proc in self.processors:
            proc.checkpoint_due = False
            store = self.stores[proc.name]
            if store is None:
                continue
            started = time.perf_counter()
            state = proc.state(final=final)
            version = proc.model_version
            v, write = store.prepare(
                {
                    "processor": proc.name,
                    "format": proc.state_format,
                    "model_version": version,
                    "state": state,
                    "positions": positions,
                },
                meta={"processor": proc.name, "why": why, "model_version": version},
            )
            if background:
                writes.append(write)
            else:
                write()
            took = time.perf_counter() - started  # the loop waits for it: worth seeing
            log.info("%s: checkpoint v%d (%s, %s) in %.0f ms%s", proc.name, v, why, version,
                     1000 * took, ", written in the background" if background else "")  # fmt: skip
        if writes:
            self.writer.submit(writes)

    def _after_commit(self) -> None:
        if any(p.checkpoint_due for p in self.processors):
            self.checkpoint("new model")
        elif time.monotonic() - self.last_checkpoint >= self.args.checkpoint_interval:
            self.checkpoint("periodic")

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self.loop is not None:
            self.loop.forget(partitions)  # queued records were not committed: the owner re-reads
        for proc in self.processors:
            proc.on_revoke(partitions)
        if self.sharded is not None:  # only the shards that go; the others keep working
            going = self.sharded.revoke(partitions)
            positions = self.loop.positions() if self.loop is not None else {}
            self.sharded.save(positions, "revoke", only=going)
            self.sharded.suspend(going)
            return
        self.checkpoint("revoke")

    # -- the loop ------------------------------------------------------------------------------
    def handle(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        """Every processor on the same decoded batch; their outputs in processor order."""
        outputs: list[Output] = []
        alerts = self.alerts_topic
        if self.sharded is not None:
            per = self.sharded.handle(batch)
        else:
            for proc in self.processors:
                proc.prefetch(batch)
            per = [(proc, proc.handle(batch)) for proc in self.processors]
        for (_proc, got), view in zip(per, self.views, strict=True):
            for out in got:
                if out.topic == alerts:
                    head = _decode_head(out.value)
                    view.alert(head.category or "", head.status)
            outputs.extend(got)
        now = time.monotonic()
        if now >= self._observe_due:
            self._observe_due = now + 1.0
            for proc, view in zip(self.processors, self.views, strict=True):
                proc.observe(view)
        return outputs

    def close_server(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def status_line(self, stats: LoopStats) -> str:
        parts = [p.status() for p in self.processors]
        queued = (
            f"queued {stats.queued:,d}  late {stats.late_records:,d}  "
            if self.loop and self.loop.aligner
            else ""
        )
        if stats.rejected_records:
            queued += f"ahead {stats.rejected_records:,d}  "
        return (
            f"{stats.records_in:>10,d} records  {stats.window_rate:>8,.0f} rec/s  "
            f"dead letters {stats.dead_letters:,d}  {queued}| " + " | ".join(x for x in parts if x)
        )

    def clients(self) -> tuple[Consumer, Producer]:
        """Kafka clients, or the file source and sink for ``--from-file``."""
        a, s = self.args, self.settings
        if a.from_file:
            from stream.kafka.files import FileProducer

            return self._file_source(a.from_file), FileProducer(a.output_dir)
        producer = make_producer(s)
        try:
            consumer = make_consumer(
                s,
                [s.topic("telemetry")],
                group_id=self.group,
                from_beginning=a.from_beginning,
                on_revoke=self._on_revoke,
            )
        except BaseException:
            producer.close()
            raise
        return consumer, producer

    def _file_source(self, path: str) -> Consumer:
        """A recording or CSV as a source, read with the command line's column mapping."""
        from stream.csvmap import column_map_from_args
        from stream.kafka.files import FileConsumer

        a = self.args
        try:
            cmap = column_map_from_args(a)
            return FileConsumer(
                path, column_map=cmap, max_bytes=self.settings.max_record_bytes, fmt=a.format
            )
        except OSError as exc:
            raise DwcpError(f"cannot read {path}: {exc}") from exc
        except ValueError as exc:  # a bad column map or format names the cause
            raise DwcpError(f"{path}: {exc}") from exc

    def _aligner(self) -> Aligner | None:
        a = self.args
        if not a.align:
            return None
        return Aligner(
            idle_ms=a.align_idle_ms,
            allowed_lateness_s=a.allowed_lateness,
            max_jump_s=a.max_jump,
            max_future_s=a.max_future,
            max_queued=4 * self.settings.batch_size,
        )

    def _loop_options(self) -> dict[str, Any]:
        """What every loop of this app shares: validation, dead letters, batch size, key check
        (the history of ``--learn-from`` is read exactly as the records after it)."""
        from functools import partial

        from stream.validation import validate_telemetry

        s = self.settings
        return {
            "dead_letter_topic": s.topic("dead-letter"),
            "group_id": self.group,
            "decoder": partial(validate_telemetry, max_bytes=s.max_record_bytes),
            "max_batch": s.batch_size,
            "aligner": self._aligner(),
            "key_field": "node_id",
        }

    def learn_history(self) -> None:
        """``--learn-from``: each file through the same validation and event-time order as a
        ``--from-file`` run, into :meth:`Processor.learn`; outputs and dead letters are counted
        and dropped. Skipped when a checkpoint was restored (its state has learned it)."""
        from stream.kafka.files import NullProducer

        paths = list(self.args.learn_from or ())
        if not paths:
            return
        if self._positions:
            self._say(f"learn-from: a checkpoint was restored, so {', '.join(paths)} is skipped "
                      "(the state has learned it already)")
            return
        def progress(path: str) -> Callable[[LoopStats], None]:
            return lambda st: self._say(f"learn-from {path}: {st.records_in:,d} records")

        for path in paths:
            sink = NullProducer()
            t0 = time.monotonic()
            loop = BatchLoop(
                self._file_source(path),
                sink,
                self._learn,
                on_progress=progress(path),
                progress_interval=self.args.interval,
                health=_Learning(self.health),  # live while it learns, not ready
                **self._loop_options(),
            )
            stats = loop.run()
            self._say(
                f"learn-from {path}: learned {stats.records_in - stats.dead_letters:,d} records "
                f"in {time.monotonic() - t0:.1f}s ({stats.dead_letters:,d} invalid, dropped)"
            )
        for proc in self.processors:
            proc.end_learning()

    def _learn(self, batch: list[tuple[Message, Any]]) -> list[Output]:
        for proc in self.processors:
            proc.learn(batch)
        return []

    def run(self, install_signals: bool = True) -> LoopStats:
        """Learn from ``--learn-from`` history, then run until the file ends, a limit is
        reached or a signal arrives; then checkpoint (after the final commit) and close the
        processors."""
        a, s = self.args, self.settings
        self.learn_history()
        t0 = time.perf_counter()
        for proc in self.processors:  # before joining: the first records wait for none of it
            proc.ready()
        if (took := time.perf_counter() - t0) >= 0.5:
            log.info("processors ready in %.1f s", took)
        if self.n_shards > 1:
            self.sharded = ShardSet(
                self.processors,
                self._shard_store,
                self.n_shards,
                self._partitions(),
                self._say,
                positions=not a.from_file,
            )
        consumer, producer = self.clients()
        self.loop = loop = BatchLoop(
            consumer,
            producer,
            self.handle,
            poll_timeout_ms=s.poll_timeout_ms,
            max_records=a.max_records,
            max_seconds=a.max_seconds,
            idle_timeout=a.idle_timeout,
            on_commit=self._after_commit,
            on_close=lambda: self.checkpoint("shutdown", final=True),
            on_progress=lambda st: self._say(self.status_line(st)),
            progress_interval=a.interval,
            start_positions=self.start_positions(),
            metrics=self.metrics,
            health=self.health,
            on_assignment=self._on_assignment if self.sharded is not None else None,
            **self._loop_options(),
        )
        try:
            # the restored state is frozen while the loop runs (stream.collector)
            with collector.tuned(s.gc_threshold):
                if install_signals:
                    with handle_signals(loop.stop):
                        stats = loop.run()
                else:
                    stats = loop.run()
        finally:
            self.health.stopping = True
            self.writer.wait(raise_error=False)  # (the loop died: a write in flight lands)
            for proc, view in zip(self.processors, self.views, strict=True):
                try:
                    proc.observe(view)  # the final gauges
                except Exception:
                    log.exception("%s: observe failed", proc.name)
            for proc in self.processors:
                try:
                    proc.close()
                except Exception:
                    log.exception("%s: close failed", proc.name)
            self.close_server()
        # every run ends with the processors' summaries (a processor may write reports there,
        # e.g. reliability with --labels --report-dir); --summary keeps them as JSON
        doc: dict[str, Any] = {p.name: p.summary() for p in self.processors}
        if a.summary:
            import orjson

            doc["loop"] = {
                "records": stats.records_in,
                "dead_letters": stats.dead_letters,
                "outputs": stats.outputs,
                "seconds": round(stats.elapsed, 2),
                "seconds_from_first_record": (
                    None if (since := stats.since_first_record) is None else round(since, 2)
                ),
                "stop_reason": stats.stop_reason,
                "late_records": stats.late_records,
                "rejected_ahead": stats.rejected_records,
            }
            Path(a.summary).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return stats

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class _Learning(Health):
    """The health a ``--learn-from`` loop reports to: each iteration keeps the process live
    (a long history must not fail ``/healthz``), none makes it ready (no partition yet)."""

    def __init__(self, health: Health) -> None:
        self._health = health

    def beat(self, assigned: bool) -> None:
        self._health.beat(False)


class _AlertHead(msgspec.Struct):
    status: str
    category: str | None = None


_decode_head = msgspec.json.Decoder(_AlertHead).decode


def main(
    processors: Sequence[type[Processor]],
    argv: Sequence[str] | None = None,
    prog: str = "python -m consumers",
    configure: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Entry point of a consumer: parse, set up logging, run, map errors to exit codes.

    ``configure(args)`` runs once before the processors are built (e.g. thread limits).
    """
    args = build_parser(processors, prog).parse_args(argv)
    try:
        settings = settings_from(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        several = len(processors) > 1
        for proc in processors:
            proc.configure(processor_args(args, proc, several))
        if configure is not None:
            configure(args)
        app = App(processors, args=args, settings=settings, prog=prog)
        stats = app.run()
    except DwcpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    names = "+".join(p.name for p in processors)
    print(
        f"{names}: stopped ({stats.stop_reason}) after {stats.records_in:,d} records, "
        f"{stats.outputs:,d} outputs, {stats.dead_letters:,d} dead letters",
        file=sys.stderr,
    )
    return 0
