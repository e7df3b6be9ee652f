"""Outbox commits on their own thread, so ingest decodes and evaluates rules meanwhile.

SQLite releases the GIL while it writes, so a batch's commit overlaps the decoding of the
next one. The queue is short (bounded memory, G6). `durable()` hands the reading thread the
newest checkpoint whose transaction has committed: only that may be acknowledged to the
source (G1).

A failed write is final for the writer: it is raised on the reading thread at its next call,
every batch after it is dropped uncommitted (a later batch's checkpoint would cover the failed
one's changes), `durable()` hands out nothing more and `idle()` never answers true again (an
idle position confirmed after a failure would skip the failed batch's changes). The caller
ends its session; the next one starts over from the checkpoint that is in the outbox.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from task_bridge.operations import Operation
from task_bridge.outbox.base import IngestOutbox

QUEUE_BATCHES = 2


@dataclass(frozen=True, slots=True)
class _Batch:
    ops: Sequence[Operation]
    checkpoint: str | None
    now: float


class OutboxWriter:
    def __init__(
        self,
        outbox: IngestOutbox,
        source: str,
        on_committed: Callable[[Sequence[Operation], int], None],
    ) -> None:
        """`on_committed(ops, inserted)` runs on the writer thread after each commit."""
        self.outbox = outbox
        self.source = source
        self.on_committed = on_committed
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._lock = threading.Lock()  # guards the three fields below (two threads)
        self._durable: str | None = None
        self._failure: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._run, name=f"outbox-{source}", daemon=True)
        self._thread.start()

    def submit(self, ops: Sequence[Operation], checkpoint: str | None, now: float) -> None:
        """Queue a batch (blocks while the queue is full: back-pressure on reading)."""
        self._raise()
        self._queue.put(_Batch(ops, checkpoint, now))

    def durable(self) -> str | None:
        """The newest committed checkpoint not handed out yet (then None until the next);
        never one after a failed write."""
        self._raise()
        with self._lock:
            if self._failure is not None:
                return None
            position, self._durable = self._durable, None
        return position

    def idle(self) -> bool:
        """Nothing queued or being committed, and no write has failed."""
        self._raise()
        with self._lock:
            return self._failure is None and self._queue.unfinished_tasks == 0

    def drain(self) -> None:
        """Wait until every queued batch is committed (or dropped after a failure)."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        """Raise a failed write's error, once; the failure itself stays."""
        with self._lock:
            if self._failure is None or self._reported:
                return
            self._reported = True
            failure = self._failure
        raise failure

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                with self._lock:
                    failed = self._failure is not None
                if failed:
                    continue  # never commit after a failure: its changes would be skipped
                inserted = self.outbox.put(batch.ops, self.source, batch.checkpoint, batch.now)
                self.on_committed(batch.ops, inserted)
                if batch.checkpoint is not None:
                    with self._lock:
                        self._durable = batch.checkpoint
                self.outbox.maintain()
            except BaseException as exc:  # handed to the reading thread, never lost
                with self._lock:
                    self._failure = exc
            finally:
                self._queue.task_done()
