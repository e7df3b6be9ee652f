"""The event loop's outbox: one connection, used only from one thread of its own.

Delivery, the targets' store, housekeeping and reclaim run on the asyncio loop, and an outbox
call may wait: on the write lock the ingest writer holds, on SQLite's lock when another
connection writes, on a Postgres round trip. `LoopOutbox` runs every such call on its worker
thread and hands the result back to the loop, so the loop goes on serving requests and timers
meanwhile.

One worker, one connection: calls run one at a time in the order they were made, and the
outbox's `transaction()` (scoped by thread) is only ever entered by that thread. `run(work)`
carries out one unit of work as one transaction: `work(outbox)` is a plain function, so
nothing can await inside it. Loop state stays on the loop: a unit gets what it needs as
arguments and returns what it learned.

A call whose awaiting task is cancelled may still run (or have run) on the worker: its outcome
is unknown to the caller, as after a crash (claimed ops stay inflight until reset or reclaim).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from task_bridge.operations import StepResult
from task_bridge.outbox.base import OpResult, Outbox, Status, StoredOp

T = TypeVar("T")

THREAD_NAME = "outbox-loop"


class LoopOutbox:
    """Async face of one `Outbox` connection, which only the worker thread touches."""

    def __init__(self, outbox: Outbox, name: str = THREAD_NAME) -> None:
        """Takes `outbox` over: from now on only the worker uses it (and `aclose` closes it)."""
        self._outbox = outbox
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[[Outbox], T]) -> T:
        """`fn(outbox)` on the worker thread (its writes commit as the outbox's methods do)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._outbox)

    async def run(self, work: Callable[[Outbox], T]) -> T:
        """`work(outbox)` on the worker thread, inside one outbox transaction: its writes
        commit together, or none of them does when it raises."""

        def unit(outbox: Outbox) -> T:
            with outbox.transaction():
                return work(outbox)

        return await self.call(unit)

    # -- what delivery, housekeeping and reclaim use --------------------------------------------

    async def claim_due(
        self,
        now: float,
        limit: int,
        exclude_targets: Sequence[str] = (),
        *,
        target: str | None = None,
        ops: Sequence[str] = (),
    ) -> list[StoredOp]:
        return await self.call(
            lambda o: o.claim_due(now, limit, exclude_targets, target=target, ops=ops)
        )

    async def complete(self, results: Sequence[OpResult]) -> None:
        await self.call(lambda o: o.complete(results))

    async def chain_steps(self, chain: str) -> dict[str, StepResult]:
        return await self.call(lambda o: o.chain_steps(chain))

    async def next_due_at(self) -> float | None:
        return await self.call(lambda o: o.next_due_at())

    async def reset_inflight(self) -> int:
        return await self.call(lambda o: o.reset_inflight())

    async def reclaim_orphans(self) -> int:
        return await self.call(lambda o: o.reclaim_orphans())

    async def counts(self) -> dict[str, int]:
        return await self.call(lambda o: o.counts())

    async def purge(self, statuses: Sequence[Status], older_than: float) -> int:
        return await self.call(lambda o: o.purge(statuses, older_than))

    async def oldest_pending_created_at(self) -> float | None:
        return await self.call(lambda o: o.oldest_pending_created_at())

    # -- the targets' store (`targets.base.TargetStore`) ---------------------------------------

    async def get_remote_id(self, target: str, uid: str) -> str | None:
        return await self.call(lambda o: o.get_remote_id(target, uid))

    async def set_remote_id(self, target: str, uid: str, remote_id: str) -> None:
        await self.call(lambda o: o.set_remote_id(target, uid, remote_id))

    async def get_state(self, key: str) -> str | None:
        return await self.call(lambda o: o.get_state(key))

    async def set_state(self, key: str, value: str) -> None:
        await self.call(lambda o: o.set_state(key, value))

    async def aclose(self) -> None:
        """Close the connection (after the calls made before this one), then the worker."""
        try:
            await self.call(lambda o: o.close())
        finally:
            self._executor.shutdown(wait=False)
