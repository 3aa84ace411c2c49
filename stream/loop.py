"""The batch consume loop every consumer runs, with at-least-once delivery.

One iteration::

    poll a batch -> decode + validate each record
                 [-> with an aligner: buffered, released in event-time order]
                 -> good records: handler(records) -> outputs
                 -> bad records:  DeadLetter (original bytes, origin, reasons)
    -> produce outputs and dead letters -> producer.flush() -> commit (max offset + 1;
       with an aligner, the lowest offset still buffered per partition)

Guarantees
----------
* **At least once.** Offsets are committed only after ``flush`` confirmed every output and
  dead letter of the batch, so a crash anywhere before the commit means the batch is read
  again (duplicates are possible, losses are not). Downstream records carry stable ids for
  de-duplication (see :class:`stream.records.Alert`).
* **Bad data is data.** A record the decoder rejects (or whose decoding raises) becomes a
  :class:`stream.records.DeadLetter` on the dead-letter topic, keyed by the original key,
  and its offset is committed with the rest; good records keep flowing.
* **A handler exception stops the loop.** Nothing of the batch is produced or committed; the
  error is logged with the batch's partitions and offsets and re-raised, so the process
  exits non-zero and a restart re-reads the batch. A handler bug is a code problem, not a
  data problem: dead-lettering the batch would silently drop good records. A handler that
  wants to reject single records returns :class:`Output` records to the dead-letter topic.
* **Rebalances.** Every batch is committed before the next poll, and rebalance callbacks only
  run inside a poll, so ``on_revoke`` (passed to :func:`stream.kafka.make_consumer`) sees
  state that matches the committed offsets. A commit the broker refuses (the group
  rebalanced meanwhile) is logged and retried with the next batch for the partitions still
  assigned; the others are re-read by their new owner.
* **Graceful stop** (:meth:`BatchLoop.stop`, SIGINT/SIGTERM via :func:`run_consumer`, or a
  ``max_records``/``max_seconds``/``idle_timeout`` limit): the batch in hand is finished,
  flushed and committed, then ``on_close()`` runs (checkpoint state there: it matches the
  committed offsets) and the clients are closed (closing the consumer leaves the group, which
  calls ``on_revoke`` once more). ``on_close`` is *not* called when the loop dies on an
  exception, so a checkpoint never gets ahead of the committed offsets.

Throughput: each batch costs one synchronous commit, a broker round trip of about 5 ms on
Kafka 4.x (its group coordinator lingers 5 ms to batch writes), so the batch size
(``DWCP_BATCH_SIZE``) bounds the rate: ~100k records/s at 1000, ~140k at 5000 (see
``bench/bench_clients.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import msgspec

from stream.alignment import Aligner
from stream.deadletters import dead_letter, describe_batch, source_errors
from stream.errors import CommitError, SettingsError
from stream.kafka import Consumer, Message, Producer, TopicPartition, make_consumer, make_producer
from stream.loop_stats import LoopStats
from stream.metrics import Health, Metrics, MetricsServer
from stream.records import FieldError
from stream.settings import Settings
from stream.shutdown import handle_signals
from stream.validation import validate_telemetry

__all__ = ["BatchLoop", "Decoder", "Handler", "LoopStats", "Output", "run_consumer"]

log = logging.getLogger(__name__)


class Output(msgspec.Struct, frozen=True):
    """A record for the loop to produce: ``Output(topic, key, value)``."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


#: ``decoder(value) -> (record, [])`` or ``(None, reasons)``, like ``validate_telemetry``.
Decoder = Callable[[bytes], tuple[Any, list[FieldError]]]
#: ``(message, validated record or None, reasons it is bad)``.
Decoded = tuple[Message, Any, list[FieldError]]
#: ``handler([(message, record), ...]) -> outputs`` (``None`` means no outputs).
Handler = Callable[[list[tuple[Message, Any]]], Iterable[Output] | None]


class BatchLoop:
    """Poll -> validate -> handle -> produce -> flush -> commit, until stopped.

    Parameters
    ----------
    consumer, producer
        Clients from :mod:`stream.kafka`; closed when the loop ends if ``close_clients``.
    handler
        Called with the batch's good records; returns the outputs to produce.
    dead_letter_topic
        Wire name of the dead-letter topic.
    group_id
        Recorded as ``consumer`` in each dead letter.
    decoder
        Decodes and validates one value (default :func:`stream.validation.validate_telemetry`).
    max_batch, poll_timeout_ms
        Records per poll and how long one poll may wait.
    max_records, max_seconds, idle_timeout
        Stop after this many records, this many seconds, or this many seconds without data
        while partitions are assigned (joining the group does not count as idle).
    on_commit
        Called after every successful commit (state now matches the committed offsets: the
        place for a scheduled checkpoint).
    on_close
        Called once after the final commit of a graceful stop (checkpoint state here).

    A consumer with an ``at_end`` attribute that turns true (a file source) ends the loop once
    it has nothing more to give (stop reason ``end of input``). A record with the
    ``dwcp-source-errors`` header (:mod:`stream.kafka.files`) was rejected by its source and
    is dead-lettered with those reasons without being decoded.
    on_progress, progress_interval
        ``on_progress(stats)`` every ``progress_interval`` seconds and once at the end.
    aligner
        Hand records on in event-time order across partitions (:mod:`stream.alignment`):
        polled records are queued per partition, released merged by event time, and their
        offsets committed as they are processed; full queues pause their partition. ``None``:
        each polled batch is processed as it comes. Call :meth:`forget` from ``on_revoke``.
    on_assignment
        With an aligner: ``on_assignment(assigned)`` whenever the assignment changed or a
        rebalance revoked partitions, before any record of it is handled; it returns where to
        read newly assigned partitions from (``(offset, [offsets after it handled])``, as
        ``start_positions``), e.g. the positions of their restored state
        (:mod:`stream.shards`).
    key_field
        The record attribute a message's Kafka key must equal (UTF-8), e.g. ``"node_id"``:
        records are partitioned by key, so a record keyed by another node would sit on that
        node's partition, out of its own node's order; it is dead-lettered, naming both. A
        message without a key is not checked. ``None``: no check.
    metrics, health
        Where to count records, dead letters, batch and commit times, consumer lag and the
        event-time watermark (:class:`stream.metrics.Metrics`), and where to report each
        completed iteration and the assignment (:class:`stream.metrics.Health`).
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        handler: Handler | None = None,
        *,
        dead_letter_topic: str,
        group_id: str,
        decoder: Decoder = validate_telemetry,
        max_batch: int = 1000,
        poll_timeout_ms: int = 500,
        max_records: int | None = None,
        max_seconds: float | None = None,
        idle_timeout: float | None = None,
        on_close: Callable[[], None] | None = None,
        on_commit: Callable[[], None] | None = None,
        on_progress: Callable[[LoopStats], None] | None = None,
        progress_interval: float = 5.0,
        flush_timeout: float = 60.0,
        close_clients: bool = True,
        aligner: Aligner | None = None,
        start_positions: Mapping[TopicPartition, tuple[int, Sequence[int]]] | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
        key_field: str | None = None,
        on_assignment: Callable[[set[TopicPartition]], Mapping[TopicPartition, Any]] | None = None,
    ) -> None:
        self.consumer, self.producer, self.handler = consumer, producer, handler
        self.dead_letter_topic, self.group_id, self.decoder = dead_letter_topic, group_id, decoder
        self.max_batch, self.poll_timeout_ms = max_batch, poll_timeout_ms
        self.max_records, self.max_seconds = max_records, max_seconds
        self.idle_timeout, self.on_close, self.on_commit = idle_timeout, on_close, on_commit
        self.on_progress, self.progress_interval = on_progress, progress_interval
        self.flush_timeout, self.close_clients = flush_timeout, close_clients
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._pending: dict[TopicPartition, int] = {}
        self.aligner = aligner
        if aligner is not None:  # a record the aligner rejects is dead-lettered with its reason
            aligner.reject = _reject
        self._paused: set[TopicPartition] = set()
        # from a checkpoint: where its state stopped, per partition (applied at the first
        # assignment only: a partition assigned later was someone else's meanwhile)
        self._rewind = dict(start_positions or {}) if aligner is not None else {}
        self._revoked: set[TopicPartition] = set()  # revoked, not settled yet
        self.on_assignment = on_assignment
        self._assigned: set[TopicPartition] = set()  # as on_assignment last saw it
        self._poll_clock_ms = 0.0  # time spent waiting in polls
        self._next: dict[TopicPartition, int] = {}  # offset after the last one queued
        self.metrics, self.health = metrics, health
        self.key_field = key_field
        self._committed: dict[TopicPartition, int] = {}  # last committed offsets (for lag)
        self._asked: set[TopicPartition] = set()  # committed offsets asked for since assigned
        self._lag_due = 0.0
        self._late_counted = 0

    def stop(self) -> None:
        """Ask the loop to stop after the batch in hand (thread- and signal-safe)."""
        self._stop.set()

    def run(self) -> LoopStats:
        """Run until stopped or a limit is reached; returns the final stats."""
        stats = self.stats
        stats.started = last_data = next_progress = time.monotonic()
        stats._window = (stats.started, 0)
        next_progress += self.progress_interval
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                stats.stop_reason = self._limit_reached(now, last_data)
                if stats.stop_reason:
                    break
                want = self.max_batch
                if self.max_records is not None:
                    want = min(want, self.max_records - stats.records_in)
                t_poll = time.monotonic()
                batch = self.consumer.poll_batch(want, self.poll_timeout_ms)
                self._poll_clock_ms += (time.monotonic() - t_poll) * 1000.0
                if self.aligner is not None:
                    handled = self._aligned_step(batch, want)
                    if batch or handled:
                        last_data = time.monotonic()
                    elif getattr(self.consumer, "at_end", False) and not len(self.aligner):
                        stats.stop_reason = "end of input"
                        break
                    elif self.idle_timeout is not None and not self.consumer.assignment():
                        last_data = time.monotonic()  # still joining the group: not idle yet
                elif batch:
                    self.process_batch(batch)
                    last_data = time.monotonic()
                elif getattr(self.consumer, "at_end", False):
                    stats.stop_reason = "end of input"
                    break
                elif self.idle_timeout is not None and not self.consumer.assignment():
                    last_data = time.monotonic()  # still joining the group: not idle yet
                if self.health is not None or self.metrics is not None:
                    self._observe()
                if self.on_progress and time.monotonic() >= next_progress:
                    stats.tick(time.monotonic())
                    self.on_progress(stats)
                    next_progress = time.monotonic() + self.progress_interval
            stats.stop_reason = stats.stop_reason or "stop requested"
            if self.aligner is not None and len(self.aligner) and stats.stop_reason.startswith("idle"):
                # no input for idle_timeout: the input is over, as at the end of a file
                self._aligned_step([], self.max_batch, flush=True)
            if self._pending:
                self._commit({})
            if self.metrics is not None:
                self._lag_due = 0.0
                self._observe()  # the final lag, after the final commit
            stats.stopped = time.monotonic()
            if self.on_progress:
                stats.tick(stats.stopped)
                self.on_progress(stats)
            if self.on_close:
                self.on_close()
            log.info(
                "loop stopped (%s): %d record(s), %d dead letter(s), %d output(s), %d batch(es)",
                stats.stop_reason,
                stats.records_in,
                stats.dead_letters,
                stats.outputs,
                stats.batches,
            )
        finally:
            stats.stopped = stats.stopped or time.monotonic()
            if self.close_clients:
                self._close_clients()
        return stats

    def process_batch(self, batch: Sequence[Message]) -> None:
        """Validate, handle, produce, flush and commit one batch (raises on handler error)."""
        self._process(self._decode(batch))

    def _decode(self, batch: Sequence[Message]) -> list[Decoded]:
        """``(message, record or None, reasons)`` per message, in order."""
        out: list[Decoded] = []
        decoder, key_field = self.decoder, self.key_field
        for m in batch:
            rejected = source_errors(m) if m.headers else None
            if rejected:
                out.append((m, None, rejected))
                continue
            if m.null:
                out.append((m, None, [FieldError(field="", reason=_TOMBSTONE)]))
                continue
            try:
                rec, errors = decoder(m.value)
            except Exception as exc:  # a decoder bug must not stop the stream either
                rec, errors = (
                    None,
                    [FieldError(field="", reason=f"decoder raised {type(exc).__name__}: {exc}")],
                )
            if key_field and not errors and m.key is not None:
                own = getattr(rec, key_field)
                if m.key != own.encode():
                    errors = [_wrong_key(key_field, m.key, own)]
            out.append((m, None if errors else rec, errors))
        return out

    def _process(
        self, decoded: Sequence[Decoded], offsets: dict[TopicPartition, int] | None = None
    ) -> None:
        """Handle, produce, flush and commit decoded records (``offsets``: what to commit, by
        default the highest offset + 1 per partition of the batch)."""
        good: list[tuple[Message, Any]] = []
        bad: list[tuple[Message, list[FieldError]]] = []
        computed: dict[TopicPartition, int] = {}
        for m, rec, errors in decoded:
            if errors:
                bad.append((m, errors))
            else:
                good.append((m, rec))
            tp = (m.topic, m.partition)
            if m.offset >= computed.get(tp, -1):
                computed[tp] = m.offset + 1
        if offsets is None:
            offsets = computed
        batch = [m for m, _r, _e in decoded]
        if self.stats.first_record is None and decoded:
            self.stats.first_record = time.monotonic()
        t0 = time.perf_counter()
        outputs = self._handle(good, batch) if good and self.handler else []
        t_handled = time.perf_counter()
        produce = self.producer.produce
        for out in outputs:
            produce(out.topic, out.value, out.key, out.headers or None)
        if bad:
            failed_at = dt.datetime.now(dt.UTC)
            for m, errors in bad:
                letter = dead_letter(m, errors, self.group_id, failed_at)
                produce(self.dead_letter_topic, letter, m.key, m.headers or None)
        self.producer.flush(self.flush_timeout)
        self._commit(offsets)
        stats = self.stats
        stats.records_in += len(decoded)
        stats.dead_letters += len(bad)
        stats.outputs += len(outputs)
        stats.batches += 1
        if self.metrics is not None:
            self._count(decoded, good, bad, outputs, t_handled - t0, time.perf_counter() - t0)

    def _count(
        self,
        decoded: Sequence[Decoded],
        good: list[tuple[Message, Any]],
        bad: list[tuple[Message, list[FieldError]]],
        outputs: list[Output],
        handle_s: float,
        batch_s: float,
    ) -> None:
        """The batch in the metrics (per batch: a handful of increments, not one per record)."""
        m = self.metrics
        assert m is not None
        if decoded:
            first, last = decoded[0][0].topic, decoded[-1][0].topic
            if first == last:
                m.consumed(first, len(decoded))
            else:
                for topic, n in Counter(x[0].topic for x in decoded).items():
                    m.consumed(topic, n)
        produced = Counter(o.topic for o in outputs) if outputs else Counter()
        if bad:
            produced[self.dead_letter_topic] += len(bad)
            for _msg, errors in bad:
                m.dead_letter(errors)
        m.produced(produced)
        if good:  # released in event-time order: the last is the newest
            when = getattr(good[-1][1], "timestamp", None) or getattr(good[-1][1], "event_time", None)
            ts = when.timestamp() if isinstance(when, dt.datetime) else None
            if ts is not None and (m.watermark_s is None or ts > m.watermark_s):
                m.watermark_s = ts
        m.handle_seconds.observe(handle_s)
        m.batch_seconds.observe(batch_s)
        m.last_batch.set(time.time())

    def _observe(self) -> None:
        """Health beat every iteration; consumer lag and alignment gauges once a second."""
        now = time.monotonic()
        at_end = hasattr(self.consumer, "at_end")
        if self.health is not None:
            self.health.beat(at_end or bool(self.consumer.assignment()))
        m = self.metrics
        if m is None or now < self._lag_due:
            return
        self._lag_due = now + 1.0
        if self.stats.late_records > self._late_counted:
            m.late.inc(self.stats.late_records - self._late_counted)
            self._late_counted = self.stats.late_records
        m.queued.set(self.stats.queued)
        if at_end:
            return
        assigned = self.consumer.assignment()
        unknown = [tp for tp in assigned if tp not in self._committed and tp not in self._asked]
        if unknown:  # one round trip per newly assigned partition
            self._asked.update(unknown)
            for tp, off in self.consumer.committed(sorted(unknown)).items():
                if off is not None:
                    self._committed[tp] = off
        ends = self.consumer.end_offsets()
        m.set_lag(
            {
                tp: max(0, ends[tp] - self._committed[tp])
                for tp in assigned
                if tp in ends and tp in self._committed
            }
        )

    # -- event-time alignment -------------------------------------------------------------------
    def _aligned_step(self, batch: Sequence[Message], want: int, flush: bool = False) -> int:
        """Buffer a polled batch, hand on what the aligner releases; returns records handled."""
        aligner = self.aligner
        assert aligner is not None
        consumer = self.consumer
        # the alignment clock runs only while the loop waits on the consumer: time spent
        # handling a big batch must not make a partition whose data is on its way look idle
        now_ms = self._poll_clock_ms
        assigned = consumer.assignment()
        revoked = bool(self._revoked)
        self._settle_revoked(assigned)
        aligner.assign(assigned, now_ms)
        if not consumer.reachable():
            aligner.wait_again(now_ms)  # an outage: empty polls say nothing about a partition
        if self.on_assignment is not None and (revoked or assigned != self._assigned):
            self._assigned = set(assigned)
            self._rewind.update(self.on_assignment(set(assigned)))
        if self._rewind and assigned:
            batch = self._rewind_to_checkpoint(assigned, batch)
        batch = [m for m in batch if self._fresh(m)]
        if batch:
            aligner.add(
                (
                    (
                        (m.topic, m.partition),
                        m.offset,
                        (m, rec, errors),
                        rec.timestamp.timestamp() if rec else None,
                        rec.node_id if rec else "",
                    )
                    for m, rec, errors in self._decode(batch)
                ),
                now_ms,
                # live sources only: a recording may lie anywhere in time
                wall_s=None if hasattr(consumer, "at_end") else time.time(),
            )
        flush = flush or bool(getattr(consumer, "at_end", False))
        caught_up = consumer.caught_up()
        handled = 0
        # everything that may go now, one batch at a time, before the next poll: a backlog
        # arrives a partition at a time, and most of it becomes releasable at once when the
        # last partition catches up (one batch per poll would wait a poll timeout per batch)
        while True:
            released = aligner.release(want, now_ms, flush=flush, caught_up=caught_up)
            if released:
                offsets = cast(dict[TopicPartition, int], aligner.commit_offsets())
                self._process([item for item, _ts in released], offsets)
                handled += len(released)
            if len(released) < want or (self._stop.is_set() and not flush):
                break
        pause = [cast(TopicPartition, tp) for tp in aligner.to_pause() if tp not in self._paused]
        resume = [cast(TopicPartition, tp) for tp in aligner.to_resume() if tp in self._paused]
        if pause:
            consumer.pause(pause)
            self._paused.update(pause)
        if resume:
            consumer.resume(resume)
            self._paused.difference_update(resume)
        self.stats.late_records = aligner.late
        self.stats.rejected_records = aligner.rejected
        self.stats.queued = len(aligner)
        return handled

    def positions(self) -> dict[TopicPartition, tuple[int, list[int]]]:
        """Per partition, where processing stands: ``(offset, [offsets after it handled])``
        (:meth:`stream.alignment.Aligner.positions`); save it with a checkpoint and pass it
        back as ``start_positions`` (``{}`` without an aligner)."""
        if self.aligner is None:
            return {}
        return cast(dict[TopicPartition, tuple[int, list[int]]], self.aligner.positions())

    def _rewind_to_checkpoint(
        self, assigned: set[TopicPartition], batch: Sequence[Message]
    ) -> Sequence[Message]:
        """Read each assigned partition from where the restored state stopped, not from the
        committed offset: after a kill -9 the state is older than the last commit, and the
        records in between must reach it again (their outputs repeat, with the same ids).
        Records this poll returned for such a partition were fetched before the seek: dropped,
        read again."""
        rewind, self._rewind = self._rewind, {}
        aligner = self.aligner
        assert aligner is not None
        moved: set[TopicPartition] = set()
        committed = self.consumer.committed(sorted(tp for tp in assigned if tp in rewind))
        for tp in sorted(assigned):
            if tp not in rewind:
                continue
            offset, done = rewind[tp]
            try:
                self.consumer.seek(tp, offset)
            except Exception as exc:  # the partition reads from its committed offset instead
                log.warning("%s[%d]: cannot seek to the checkpoint's offset %d: %s", *tp, offset, exc)
                continue
            aligner.skip(tp, done)
            self._next[tp] = offset
            moved.add(tp)
            was = committed.get(tp)
            if was is not None and was != offset:
                log.info(
                    "%s[%d]: reading from offset %d, where the checkpoint's state stopped "
                    "(committed: %d)", *tp, offset, was,
                )
        return [m for m in batch if (m.topic, m.partition) not in moved]

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions revoked (call from ``on_revoke``): at the next step, the buffered records
        of those not assigned again are dropped (uncommitted: their new owner reads them).

        Those assigned straight back keep their records: one client keeps its fetch position
        then (kafka-python), another restarts from the committed offset (librdkafka), and
        records before an offset already buffered or handled are never buffered twice, so
        neither loses nor repeats a record.
        """
        self._revoked.update(partitions)
        for tp in partitions:  # its next owner commits; asked again if it comes back
            self._committed.pop(tp, None)
            self._asked.discard(tp)

    def _settle_revoked(self, assigned: set[TopicPartition]) -> None:
        if not self._revoked or self.aligner is None:
            return
        gone = [tp for tp in self._revoked if tp not in assigned]
        back = [tp for tp in self._revoked if tp in assigned]
        self.aligner.forget(gone)
        for tp in gone:
            self._next.pop(tp, None)
        resume = [tp for tp in back if tp in self._paused]
        if resume:  # a client may or may not keep a partition paused across a rebalance
            self.consumer.resume(resume)
        self._paused.difference_update(self._revoked)
        self._revoked.clear()

    def _fresh(self, m: Message) -> bool:
        """False for a record queued or handled already (a re-fetch after a rebalance)."""
        tp = (m.topic, m.partition)
        if m.offset < self._next.get(tp, -1):
            return False
        self._next[tp] = m.offset + 1
        return True

    # -- internals --------------------------------------------------------------------------
    def _handle(self, good: list[tuple[Message, Any]], batch: Sequence[Message]) -> list[Output]:
        try:
            return list(self.handler(good) or ()) if self.handler else []
        except Exception as exc:
            where = describe_batch(batch)
            log.exception(
                "handler failed on a batch of %d record(s) (%s); nothing of it was produced "
                "or committed, it is re-read after a restart",
                len(batch),
                where,
            )
            exc.add_note(f"while handling {len(batch)} record(s): {where} (offsets not committed)")
            raise

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        self._pending.update(offsets)
        t0 = time.perf_counter()
        try:
            self.consumer.commit(self._pending)
        except CommitError as exc:
            self.stats.commit_failures += 1
            if self.metrics is not None:
                self.metrics.commit_failures.inc()
            assigned = self.consumer.assignment()
            self._pending = {tp: o for tp, o in self._pending.items() if tp in assigned}
            log.warning(
                "%s; retrying with the next batch for %d partition(s) still assigned "
                "(the others are re-read by their new owner)",
                exc,
                len(self._pending),
            )
            return
        if self.metrics is not None:
            self.metrics.commit_seconds.observe(time.perf_counter() - t0)
            self._committed.update(self._pending)
        self._pending.clear()
        self.stats.commits += 1
        if self.on_commit is not None:
            self.on_commit()

    def _limit_reached(self, now: float, last_data: float) -> str:
        if self.max_records is not None and self.stats.records_in >= self.max_records:
            return f"max_records={self.max_records} reached"
        if self.max_seconds is not None and now - self.stats.started >= self.max_seconds:
            return f"max_seconds={self.max_seconds:g} reached"
        if self.idle_timeout is not None and now - last_data >= self.idle_timeout:
            return f"idle for {self.idle_timeout:g}s"
        return ""

    def _close_clients(self) -> None:
        for name, client in (("consumer", self.consumer), ("producer", self.producer)):
            try:
                client.close()
            except Exception:
                log.exception("closing the %s failed", name)


_TOMBSTONE = "null value (a tombstone): a record cannot be deleted from this stream"


def _wrong_key(field: str, key: bytes, own: str) -> FieldError:
    return FieldError(
        field=field,
        reason=f"the Kafka key {key.decode(errors='replace')!r} is not the record's {field} "
        f"{own!r}: records are partitioned by key, so it would sit outside {own!r}'s order",
        value=own,
    )


def _reject(item: Decoded, why: str) -> Decoded:
    """An aligned record turned into a dead letter (``why`` names the cause)."""
    m, _rec, errors = item
    return (m, None, [*errors, FieldError(field="timestamp", reason=why)])


def run_consumer(
    settings: Settings,
    topics: Sequence[str],
    handler: Handler | None = None,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    decoder: Decoder | None = None,
    on_assign: Callable[[list[TopicPartition]], None] | None = None,
    on_revoke: Callable[[list[TopicPartition]], None] | None = None,
    install_signals: bool = True,
    **options: Any,
) -> LoopStats:
    """Build the clients from ``settings``, run a :class:`BatchLoop`, stop on SIGINT/SIGTERM.

    ``options`` are :class:`BatchLoop` keywords (``max_records``, ``on_close``, ...);
    ``max_batch``/``poll_timeout_ms`` default to ``settings.batch_size``/``poll_timeout_ms``
    and the decoder to ``validate_telemetry`` capped at ``settings.max_record_bytes``.
    Metrics and health (``metrics``/``health`` options, new ones by default) are served on
    ``settings.metrics_port`` while the loop runs, when it is set.
    """
    group = group_id or settings.group_id
    if not group:
        raise SettingsError(
            "no consumer group: pass group_id (see Settings.consumer_group) or set DWCP_GROUP_ID"
        )
    options.setdefault("max_batch", settings.batch_size)
    options.setdefault("poll_timeout_ms", settings.poll_timeout_ms)
    metrics = options.setdefault("metrics", Metrics())
    health = options.setdefault("health", Health())
    if health is not None:
        health.restored = True  # nothing to restore here
    server = (
        MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port)
        if settings.metrics_port and metrics is not None and health is not None
        else None
    )
    try:
        return _run(settings, topics, handler, group, from_beginning, decoder, on_assign,
                    on_revoke, install_signals, options)  # fmt: skip
    finally:
        if server is not None:
            server.close()


def _run(
    settings: Settings,
    topics: Sequence[str],
    handler: Handler | None,
    group: str,
    from_beginning: bool,
    decoder: Decoder | None,
    on_assign: Callable[[list[TopicPartition]], None] | None,
    on_revoke: Callable[[list[TopicPartition]], None] | None,
    install_signals: bool,
    options: dict[str, Any],
) -> LoopStats:
    producer = make_producer(settings)
    holder: list[BatchLoop] = []

    def revoked(partitions: list[TopicPartition]) -> None:
        for loop in holder:
            loop.forget(partitions)  # queued (uncommitted) records: the next owner reads them
        if on_revoke is not None:
            on_revoke(partitions)

    try:
        consumer = make_consumer(
            settings,
            topics,
            group_id=group,
            from_beginning=from_beginning,
            on_assign=on_assign,
            on_revoke=revoked,
        )
    except BaseException:
        producer.close()
        raise
    loop = BatchLoop(
        consumer,
        producer,
        handler,
        dead_letter_topic=settings.topic("dead-letter"),
        group_id=group,
        decoder=decoder or partial(validate_telemetry, max_bytes=settings.max_record_bytes),
        **options,
    )
    holder.append(loop)
    if not install_signals:
        return loop.run()
    with handle_signals(loop.stop):
        return loop.run()
