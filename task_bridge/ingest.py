"""source -> rules -> outbox.put(ops, checkpoint) -> source.ack(checkpoint).

Runs in its own thread. Operations are written in batches; a checkpoint is written only at a
source `Commit` (or `Idle`) boundary, in the same outbox transaction as the operations of every
event before it (G1, G2), and the source is acknowledged only after that commit. Commits run on
an `OutboxWriter` thread while the next batch is decoded; the reading thread acknowledges the
checkpoints the writer reports durable. A big source
transaction is written in several batches (bounded memory, G6): re-reading it after a crash
re-derives the same op ids and inserts nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from tenacity import Retrying, retry_if_exception, stop_never, wait_random_exponential

from task_bridge.errors import SourceUnavailable
from task_bridge.events import ChangeEvent
from task_bridge.observability import Metrics, log
from task_bridge.operations import Operation, operation_id
from task_bridge.outbox.base import IngestOutbox
from task_bridge.outbox.writer import OutboxWriter
from task_bridge.rules.engine import RuleEngine
from task_bridge.sources.base import Commit, Idle, Poison, Source

BATCH_SIZE = 2000
FLUSH_INTERVAL_S = 0.1
READ_TIMEOUT_S = 0.1
STATS_INTERVAL_S = 10.0
IDLE_CHECKPOINT_INTERVAL_S = 5.0
RECONNECT_MAX_BACKOFF_S = 30.0


@dataclass
class IngestStats:
    events: int = 0
    ops: int = 0
    flushes: int = 0
    last_checkpoint: str | None = None
    _window: dict[str, float] = field(default_factory=lambda: {"t": time.monotonic(), "events": 0})


class Ingest:
    def __init__(
        self,
        source: Source,
        engine: RuleEngine,
        outbox: IngestOutbox,
        *,
        logger: logging.Logger,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
        batch_size: int = BATCH_SIZE,
        flush_interval: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        checkpoint_position: Callable[[str], float] | None = None,
    ) -> None:
        """`checkpoint_position` reads a stored checkpoint as the number the
        `task_bridge_checkpoint_position` gauge shows (the Postgres LSN); None leaves the gauge
        alone (a Kafka offset map or a Human Lambdas cursor is not one number)."""
        self.source = source
        self.engine = engine
        self.outbox = outbox
        self.log = logger
        self.metrics = metrics
        self.on_enqueued = on_enqueued
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.clock = clock
        self.checkpoint_position = checkpoint_position
        self.stats = IngestStats()
        self._events_by_table: dict[tuple[str, str], Counter] = {}
        """`task_bridge_events_total` children, so the hot path never calls `.labels()`."""
        self._ops: list[Operation] = []
        self._events_since_commit = 0
        self._checkpoint: str | None = None
        self._idle: str | None = None
        self._last_idle_store = 0.0
        self._first_unflushed = 0.0
        self.connected = False
        self._writer: OutboxWriter  # one per session (`_session`)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Read until `stop` is set; reconnect with backoff when the source drops.

        A source that cannot be reached at the very start raises `SourceUnavailable` (the CLI
        exits 2); once connected, connection losses are retried forever.
        """
        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, SourceUnavailable) and self.connected
            ),
            wait=wait_random_exponential(multiplier=0.5, max=RECONNECT_MAX_BACKOFF_S),
            stop=stop_never,
            sleep=lambda seconds: _interruptible_sleep(stop, seconds),
            before_sleep=lambda rs: log(
                self.log,
                logging.WARNING,
                "source.reconnecting",
                error=str(rs.outcome.exception()) if rs.outcome else None,
                retry_in_s=round(rs.upcoming_sleep, 2),
                attempt=rs.attempt_number,
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if stop.is_set():
                    return
                self._session(stop)

    def _session(self, stop: threading.Event) -> None:
        checkpoint = self.outbox.get_checkpoint(self.source.name)
        self._reset_buffer()
        self._writer = OutboxWriter(self.outbox, self.source.name, self._committed)
        try:
            self.source.open(checkpoint)
            self.connected = True
            log(
                self.log,
                logging.INFO,
                "source.started",
                source=self.source.name,
                checkpoint=checkpoint,
            )
            while not stop.is_set():
                self._step()
            self._flush(final=True)
        finally:
            try:
                self._writer.drain()  # what was queued is complete: let it commit
            finally:
                self._writer.close()
                self.source.close()

    def _reset_buffer(self) -> None:
        self._ops = []
        self._events_since_commit = 0
        self._checkpoint = None
        self._idle = None

    def _step(self) -> None:
        self._ack_durable()
        items = self.source.read(self.batch_size, READ_TIMEOUT_S)
        now = time.monotonic()
        for item in items:
            if isinstance(item, ChangeEvent):
                if not self._ops and not self._events_since_commit:
                    self._first_unflushed = now
                self._events_since_commit += 1
                self.stats.events += 1
                counted = self._events_by_table.get((item.schema, item.table))
                if counted is None:
                    counted = self.metrics.events.labels(table=item.qualified_table)
                    self._events_by_table[(item.schema, item.table)] = counted
                counted.inc()
                try:
                    self._ops.extend(self.engine.evaluate(item))
                except Exception as exc:  # one event, not the stream (issue #14 item 8)
                    self._poisoned(rules_failed(item, exc))
                if self.log.isEnabledFor(logging.DEBUG):
                    log(
                        self.log,
                        logging.DEBUG,
                        "event.read",
                        table=item.qualified_table,
                        op=item.op,
                        position=item.position.key(),
                    )
            elif isinstance(item, Poison):
                self._poisoned(item)
            elif isinstance(item, Commit):
                self._checkpoint = item.position
                self._events_since_commit = 0
                self._idle = None
            elif isinstance(item, Idle):
                self._idle = item.position
            if len(self._ops) >= self.batch_size:
                self._flush()
        # Flush when the source is drained for now (low latency at low load) or the batch
        # has waited long enough (throughput at high load).
        drained = len(items) < self.batch_size
        if (self._ops or self._checkpoint) and (
            drained or now - self._first_unflushed >= self.flush_interval
        ):
            self._flush()
        if (
            self._idle is not None
            and not self._ops
            and self._events_since_commit == 0
            and self._writer.idle()
        ):
            self._ack_idle(self._idle)
            self._idle = None
        self._report(now)

    def _poisoned(self, item: Poison) -> None:
        self._ops.append(poison_operation(item))
        log(
            self.log,
            logging.WARNING,
            "event.poison",
            position=item.position.key(),
            table=item.table,
            key=item.key,
            reason=item.reason,
        )

    def _flush(self, final: bool = False) -> None:
        """Hand buffered ops (+ the last complete checkpoint) to the writer; at the end, wait
        for it and acknowledge."""
        if self._ops or self._checkpoint is not None:
            self._writer.submit(self._ops, self._checkpoint, self.clock())
            self._ops, self._checkpoint = [], None
            self._first_unflushed = time.monotonic()
        if final:
            self._writer.drain()
            position = self._ack_durable()
            if position is not None:
                log(
                    self.log,
                    logging.INFO,
                    "checkpoint.stored",
                    source=self.source.name,
                    lsn=position,
                )

    def _committed(self, ops: Sequence[Operation], inserted: int) -> None:
        """On the writer thread, after each commit."""
        self.stats.flushes += 1
        self.stats.ops += inserted
        if inserted:
            self.metrics.enqueued.inc(inserted)
            self.on_enqueued()
            for op in ops if self.log.isEnabledFor(logging.DEBUG) else ():
                log(
                    self.log,
                    logging.DEBUG,
                    "op.enqueued",
                    rule=op.rule,
                    target=op.target,
                    uid=op.uid,
                    op=op.op,
                    op_id=op.op_id,
                )

    def _ack_durable(self) -> str | None:
        """Acknowledge the newest checkpoint the writer has committed, if any."""
        position = self._writer.durable()
        if position is not None:
            self.source.ack(position)
            self.stats.last_checkpoint = position
            if self.checkpoint_position is not None:
                self.metrics.checkpoint_lsn.set(self.checkpoint_position(position))
            if self.log.isEnabledFor(logging.DEBUG):
                log(self.log, logging.DEBUG, "checkpoint.stored", lsn=position)
        return position

    def _ack_idle(self, position: str | None) -> None:
        """Nothing pending (the writer is idle too): confirm the source's idle position (G9)."""
        if position is None:
            return
        now = time.monotonic()
        if now - self._last_idle_store >= IDLE_CHECKPOINT_INTERVAL_S:
            self._writer.submit([], position, self.clock())  # acked once durable
            self._last_idle_store = now
            return
        self.source.ack(position)

    def _report(self, now: float) -> None:
        window = self.stats._window
        if now - window["t"] < STATS_INTERVAL_S:
            return
        events = self.stats.events - window["events"]
        if events:
            log(
                self.log,
                logging.INFO,
                "ingest.progress",
                events=events,
                events_per_s=round(events / (now - window["t"]), 1),
                ops_enqueued_total=self.stats.ops,
                lsn=self.stats.last_checkpoint,
            )
        window["t"], window["events"] = now, self.stats.events


def _interruptible_sleep(stop: threading.Event, seconds: float) -> None:
    """Backoff sleep that a stop request cuts short."""
    stop.wait(seconds)


POISON_TARGET = "(source)"
POISON_VALUE_CHARS = 4096
"""A dead event keeps each value's text up to this many characters."""


def poison_operation(item: Poison) -> Operation:
    """A record that did not become ops, as a dead outbox entry: reason, position, table and
    key when known, and the raw record (bounded)."""
    pos = item.position
    if pos.kind == "kafka":
        uid = f"{pos.topic}/{pos.partition}/{pos.offset}"
    else:
        key = ",".join(f"{k}={v}" for k, v in (item.key or {}).items())
        uid = f"{item.table or '?'}[{key}]" if item.table else pos.key()
    return Operation(
        op_id=operation_id(pos, "(poison)", 0),
        target=POISON_TARGET,
        op="poison",
        uid=uid,
        rule="(poison)",
        action_index=0,
        position=pos,
        payload=item.raw,
        error=f"poison message: {item.reason}",
    )


def rules_failed(event: ChangeEvent, exc: Exception) -> Poison:
    """An event the rule engine raised on (outside what it dead-letters per action itself):
    a Poison holding the event's values as text."""
    key = _as_text(event.key)
    raw = {
        "op": event.op,
        "table": event.qualified_table,
        "key": key,
        "after": _as_text(event.after),
        "before": _as_text(event.before),
    }
    return Poison(
        event.position,
        f"the rules raised on this {event.op} of {event.qualified_table}:"
        f" {type(exc).__name__}: {exc}",
        raw,
        table=event.qualified_table,
        key=key,
    )


def _as_text(row: dict[str, Any] | None) -> dict[str, str | None] | None:
    """Column -> bounded text; a value whose text cannot be built says why instead."""
    if row is None:
        return None
    out: dict[str, str | None] = {}
    for name, value in row.items():
        if value is None:
            out[name] = None
            continue
        try:
            text = str(value)
        except Exception as exc:  # e.g. RecursionError for a deeply nested value
            text = f"({type(value).__name__} that has no text: {type(exc).__name__})"
        if len(text) > POISON_VALUE_CHARS:
            text = f"{text[:POISON_VALUE_CHARS]}... ({len(text)} characters in all)"
        out[name] = text
    return out
