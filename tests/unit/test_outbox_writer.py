"""The ingest's outbox writer after a failed write: nothing after it is committed, nothing
after it may be acknowledged (G1)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from task_bridge.errors import OutboxUnavailable
from task_bridge.operations import Operation
from task_bridge.outbox import SqliteOutbox
from task_bridge.outbox.writer import OutboxWriter
from tests.support.ops import make_op

SOURCE = "postgres:slot"


class FailingOutbox(SqliteOutbox):
    """A real in-memory outbox whose `put` fails for one marked batch, and whose next `put`
    waits until the test lets it go (so a batch is queued behind the failing one)."""

    def __init__(self, fail_checkpoint: str) -> None:
        super().__init__(":memory:")
        self.fail_checkpoint = fail_checkpoint
        self.release = threading.Event()

    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        if checkpoint == self.fail_checkpoint:
            assert self.release.wait(30)
            raise OutboxUnavailable("outbox: disk I/O error")
        return super().put(ops, source, checkpoint, now)


def test_after_a_failed_write_nothing_is_committed_handed_out_or_idle() -> None:
    """A failed batch is raised once; `idle()` stays false, the batches queued or submitted
    after it are dropped (their checkpoints would cover the failed changes), and `durable()`
    hands out nothing more."""
    outbox = FailingOutbox(fail_checkpoint="0/20")
    writer = OutboxWriter(outbox, SOURCE, lambda ops, inserted: None)
    try:
        writer.submit([make_op(1)], "0/10", now=1.0)
        writer.submit([make_op(2)], "0/20", now=1.0)  # fails once released
        writer.submit([make_op(3)], "0/30", now=1.0)  # queued behind it
        outbox.release.set()
        with pytest.raises(OutboxUnavailable):
            writer.drain()
        assert not writer.idle()  # an idle position confirmed now would skip change 2
        writer.drain()  # raised once: the caller already has it
        writer.submit([make_op(4)], "0/40", now=1.0)  # a later batch is not committed either
        writer.drain()
        assert outbox.get_checkpoint(SOURCE) == "0/10"
        assert outbox.counts()["pending"] == 1
        assert writer.durable() is None
    finally:
        writer.close()
        outbox.close()


def test_a_healthy_writer_hands_out_each_committed_checkpoint_once() -> None:
    """Committed checkpoints are handed out (the newest), then None; idle once drained."""
    outbox = SqliteOutbox(":memory:")
    writer = OutboxWriter(outbox, SOURCE, lambda ops, inserted: None)
    try:
        writer.submit([make_op(1)], "0/10", now=1.0)
        writer.submit([], "0/20", now=1.0)
        writer.drain()
        assert writer.idle()
        assert writer.durable() == "0/20"
        assert writer.durable() is None
    finally:
        writer.close()
        outbox.close()
