"""Delivery's claim-ahead queue against the fake Fragment API: per-task order holds, every op
goes out once, and a stop hands queued jobs back to the outbox unsent (none left inflight)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from task_bridge.delivery import Delivery
from task_bridge.events import SourcePosition
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.observability import Metrics
from task_bridge.operations import Operation
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.retry import RetryPolicy
from task_bridge.rules.chains import ChainRenderer
from task_bridge.targets.base import TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget, fragment_task_uuid

TOKEN = "queue-token"
UIDS, PER_UID = 20, 10


@pytest.fixture
def fake() -> Iterator[FakeFragment]:
    with FakeFragment(token=TOKEN) as server:
        yield server


def _ops() -> list[Operation]:
    """PER_UID upserts for each of UIDS tasks, interleaved; `n` counts up per task."""
    ops = []
    for n in range(PER_UID):
        for u in range(UIDS):
            position = SourcePosition("postgres", lsn=1 + n * UIDS + u, index=0)
            ops.append(
                Operation(
                    f"op-{n:03d}-{u:03d}",
                    "fragment",
                    "upsert",
                    f"task-{u}",
                    "queue",
                    0,
                    position,
                    {"fields": {"n": n}},
                )
            )
    return ops


async def _deliver_until(
    fake: FakeFragment,
    outbox: SqliteOutbox,
    delivered: int,
    deadline_s: float,
    batch_size: int = 1,
) -> None:
    """Run delivery (concurrency 4, on a connection of its own) until `delivered` ops are,
    then stop it."""
    box = LoopOutbox(SqliteOutbox(outbox.path))
    async with httpx.AsyncClient() as client:
        config = FragmentConfig(
            kind="fragment", base_url=fake.url, token=SecretStr(TOKEN), batch_size=batch_size
        )
        delivery = Delivery(
            box,
            {"fragment": FragmentTarget("fragment", config, TargetDeps.of(client))},
            RetryPolicy(),
            concurrency=4,
            rate_limits={},
            logger=logging.getLogger("test"),
            metrics=Metrics(),
            chains=ChainRenderer(),
        )
        stop = asyncio.Event()
        run = asyncio.create_task(delivery.run(stop))
        deadline = time.monotonic() + deadline_s
        while outbox.counts().get("delivered", 0) < delivered:
            assert time.monotonic() < deadline, f"{outbox.counts()} after {deadline_s}s"
            assert not run.done(), "delivery stopped by itself"
            await asyncio.sleep(0.01)
        stop.set()
        await run
    await box.aclose()


def test_queued_jobs_keep_task_order_and_go_back_to_pending_on_stop(
    fake: FakeFragment, tmp_path: Path
) -> None:
    fake.add_fault({"method": "PUT", "latency_ms": 20, "times": 10_000})
    outbox = SqliteOutbox(str(tmp_path / "outbox.db"))
    try:
        outbox.put(_ops(), "test", None, time.time())
        asyncio.run(_deliver_until(fake, outbox, 30, deadline_s=30))
        counts = outbox.counts()
        assert counts.get("inflight", 0) == 0, counts
        assert counts.get("delivered", 0) < UIDS * PER_UID, "stopped part-way"
        asyncio.run(_deliver_until(fake, outbox, UIDS * PER_UID, deadline_s=60))
    finally:
        outbox.close()
    puts = [r for r in fake.ledger() if r["method"] == "PUT"]
    assert len(puts) == UIDS * PER_UID, "each op sent once"
    for u in range(UIDS):
        path = f"/tasks/{fragment_task_uuid(f'task-{u}')}"
        sent = [r["body"]["fields"]["n"] for r in puts if r["path"] == path]
        assert sent == list(range(PER_UID)), f"task-{u} in order"


def test_a_batch_answer_that_cannot_be_read_per_item_is_not_counted_as_delivered(
    fake: FakeFragment, tmp_path: Path
) -> None:
    """A 2xx batch answer without a per-item list (here: the batch was not applied) sends the
    ops one at a time instead of counting them delivered: every task exists at the API."""
    fake.add_fault({"path_regex": "^/tasks/batch$", "status": 200, "body": {"ok": True}})
    outbox = SqliteOutbox(str(tmp_path / "outbox.db"))
    ops = [op for op in _ops() if op.op_id.startswith("op-000-")]  # one upsert per task
    try:
        outbox.put(ops, "test", None, time.time())
        asyncio.run(_deliver_until(fake, outbox, len(ops), deadline_s=60, batch_size=50))
    finally:
        outbox.close()
    assert {fragment_task_uuid(f"task-{u}") for u in range(UIDS)} <= set(fake.tasks())
    assert any(r["path"] == "/tasks/batch" for r in fake.ledger()), "a batch was tried"
