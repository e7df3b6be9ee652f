"""Outbox commits on their own thread, so ingest decodes and evaluates rules meanwhile.

SQLite releases the GIL while it writes, so a batch's commit overlaps the decoding of the
next one. The queue is short (bounded memory, G6). `durable()` hands the reading thread the
newest checkpoint whose transaction has committed: only that may be acknowledged to the
source (G1). A failed commit is raised on the reading thread at its next call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.operations import Operation
from bridge.outbox.base import Outbox

QUEUE_BATCHES = 2


@dataclass(frozen=True, slots=True)
class _Batch:
    ops: Sequence[Operation]
    checkpoint: str | None
    now: float


class OutboxWriter:
    def __init__(
        self,
        outbox: Outbox,
        source: str,
        on_committed: Callable[[Sequence[Operation], int], None],
    ) -> None:
        """`on_committed(ops, inserted)` runs on the writer thread after each commit."""
        self.outbox = outbox
        self.source = source
        self.on_committed = on_committed
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._durable: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"outbox-{source}", daemon=True)
        self._thread.start()

    def submit(self, ops: Sequence[Operation], checkpoint: str | None, now: float) -> None:
        """Queue a batch (blocks while the queue is full: back-pressure on reading)."""
        self._raise()
        self._queue.put(_Batch(ops, checkpoint, now))

    def durable(self) -> str | None:
        """The newest committed checkpoint not handed out yet (then None until the next)."""
        self._raise()
        position, self._durable = self._durable, None
        return position

    def idle(self) -> bool:
        """Nothing queued or being committed."""
        return self._queue.unfinished_tasks == 0

    def drain(self) -> None:
        """Wait until every queued batch is committed."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:  # after a failure, drop batches until it is raised
                    inserted = self.outbox.put(batch.ops, self.source, batch.checkpoint, batch.now)
                    self.on_committed(batch.ops, inserted)
                    if batch.checkpoint is not None:
                        self._durable = batch.checkpoint
                    self.outbox.maintain()
            except BaseException as exc:  # handed to the reading thread, never lost
                self._error = exc
            finally:
                self._queue.task_done()
