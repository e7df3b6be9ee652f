"""The loop's outbox (`LoopOutbox`) and the settle it runs: calls go to one worker thread, a
unit of work is one transaction, the loop runs on while the outbox is locked; the claim plan
counts what stays queued as delivery's start does."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from task_bridge.delivery_claims import BatchSpec, ClaimPlan, settle
from task_bridge.errors import OutboxError
from task_bridge.outbox.base import OpResult, Outbox, StoredOp
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outbox.sqlite import SqliteOutbox
from tests.support.ops import make_op


def _plan(**fields: object) -> ClaimPlan:
    base: dict[str, object] = {
        "now": time.time(),
        "concurrency": 4,
        "free": 4,
        "exclude": frozenset(),
        "probes": (),
        "everything": frozenset({"fragment"}),
        "ahead_exclude": frozenset(),
        "slots": 4,
    }
    return ClaimPlan(**{**base, **fields})  # type: ignore[arg-type]


def test_every_call_runs_on_one_worker_thread_not_the_loops(tmp_path: Path) -> None:
    async def main() -> set[int]:
        box = LoopOutbox(SqliteOutbox(str(tmp_path / "o.db")))
        try:
            idents = await asyncio.gather(
                *(box.call(lambda _: threading.get_ident()) for _ in range(10))
            )
            await box.counts()
        finally:
            await box.aclose()
        assert threading.get_ident() not in idents
        return set(idents)

    assert len(asyncio.run(main())) == 1


def test_a_unit_that_raises_commits_none_of_its_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    outbox = SqliteOutbox(path)
    outbox.put([make_op(1, uid="a"), make_op(2, uid="b")], "test", None, time.time())

    def claim_then_fail(o: Outbox) -> None:
        o.claim_due(time.time(), 10)
        raise OutboxError("after the claim")

    async def main() -> dict[str, int]:
        box = LoopOutbox(SqliteOutbox(path))
        try:
            with pytest.raises(OutboxError):
                await box.run(claim_then_fail)
            return await box.counts()
        finally:
            await box.aclose()

    assert asyncio.run(main()).get("inflight", 0) == 0
    outbox.close()


def test_the_loop_runs_on_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "o.db")
    outbox = SqliteOutbox(path)
    outbox.put([make_op(n, uid=f"u{n}") for n in range(3)], "test", None, time.time())
    outbox.close()

    async def main() -> int:
        box = LoopOutbox(SqliteOutbox(path))
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            claim = asyncio.create_task(box.claim_due(time.time(), 10))
            for _ in range(5):
                await asyncio.sleep(0)  # the loop is not held by the waiting claim
            assert not claim.done(), "a claim cannot commit while the lock is held"
            locker.execute("ROLLBACK")
            return len(await claim)
        finally:
            locker.close()
            await box.aclose()

    assert asyncio.run(main()) == 3


def test_settle_commits_results_before_it_claims_the_next_op_of_that_task(
    tmp_path: Path,
) -> None:
    """One unit: the delivered head's successor is claimable in the same transaction."""
    outbox = SqliteOutbox(str(tmp_path / "o.db"))
    outbox.put([make_op(1), make_op(2)], "test", None, time.time())
    (first,) = outbox.claim_due(time.time(), 10)
    done = OpResult(first.seq, "delivered", 1, time.time())
    with outbox.transaction():
        claimed = settle(outbox, [done], _plan(free=3, slots=3))
    outbox.close()
    assert [job[0].seq for job in claimed.now] == [first.seq + 1]
    assert claimed.ops == 1 and claimed.ahead == []


def test_settle_groups_batchable_ops_and_tops_them_up(tmp_path: Path) -> None:
    outbox = SqliteOutbox(str(tmp_path / "o.db"))
    outbox.put([make_op(n, uid=f"u{n}") for n in range(7)], "test", None, time.time())
    batching = {"fragment": BatchSpec(frozenset({"upsert"}), 3)}
    with outbox.transaction():
        claimed = settle(outbox, [], _plan(free=1, slots=1, batching=batching))
    outbox.close()
    assert [len(job) for job in claimed.now] == [3]
    assert [len(job) for job in claimed.ahead] == [3, 1], "ahead: the rest, batched"


def test_plan_counts_the_jobs_left_queued_by_slots_and_caps() -> None:
    jobs = [[make_stored("paced")], [make_stored("fast")], [make_stored("paced")]]
    plan = _plan(slots=2, start_caps={"paced": 1}, queued=("paced",))
    # queued paced starts (cap 1 -> 0), new paced waits, fast starts (slots 0), paced waits
    assert plan.left_queued(jobs) == 2
    assert _plan(slots=0).left_queued(jobs) == 3
    assert _plan(slots=9).left_queued(jobs) == 0


def make_stored(target: str) -> StoredOp:
    """A claimed op of `target` (only its target matters to the plan)."""
    outbox = SqliteOutbox(":memory:")
    try:
        outbox.put([make_op(1, target=target)], "test", None, time.time())
        (op,) = outbox.claim_due(time.time(), 1)
        return op
    finally:
        outbox.close()
