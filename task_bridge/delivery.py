"""claim due ops -> target.send -> delivered | retry | dead, one op at a time per (target, UID).

Asyncio with one shared `httpx.AsyncClient` (owned by the app). Ordering per task (G4) comes
from the outbox: only the head op of each (target, uid) can be claimed, and it stays `inflight`
until its result is committed. Failure isolation (G5): a permanent error kills one op and parks
its UID's later ops; transient errors retry with backoff and `Retry-After`. Per-target pacing is
a leaky bucket (aiolimiter) shared by all requests to that target; a target that keeps failing
is paused by its breaker (`breaker.py`). `outcomes.py` turns each attempt into its result.

Claiming ahead: besides the ops it starts, delivery claims up to `concurrency` more jobs into a
local queue (not for rate-limited targets, whose pace the cap keeps). A request that finishes
starts the next queued job at once, and results are committed together with the next claim in
one outbox transaction when the queue runs low (or a result has waited SETTLE_AFTER_S), so the
outbox is written once per several ops at high load and at once at low load. Queued jobs are
`inflight` like started ones; a breaker that opens or a shutdown hands them back unsent. A job
starts only once its claim is committed (the settle's unit returns after its commit): a claim
whose commit failed was never this bridge's. With the outbox gone (connection lost), in-flight
requests are cancelled at once: nothing they learn could be stored, and a bridge sharing the
outbox may take their ops over.

Batching: when a claimed op can be batched by its target (`batch_ops`, `max_batch`: see
`targets.base`), more due ops of that kind are claimed for the same target and sent in one
request per `max_batch`.
Each op still gets its own result; a batch refused as a whole is re-sent one op at a time.

Off the loop: every outbox call runs on the outbox thread (`outbox.offloop.LoopOutbox`). A
settle is one unit there (`delivery_claims.settle`): delivery snapshots what it may claim,
awaits the unit and queues what it claimed; meanwhile running jobs finish and queued ones
start. Delivery's own state (tasks, queue, results, breakers) is only touched on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiolimiter import AsyncLimiter

from task_bridge.breaker import Breakers
from task_bridge.delivery_claims import ClaimPlan, batch_specs, settle
from task_bridge.errors import (
    OutboxError,
    PermanentDeliveryError,
    TemplateError,
    TransientDeliveryError,
)
from task_bridge.observability import Metrics, log
from task_bridge.operations import DeferredStep, StepResult
from task_bridge.outbox.base import OpResult, StoredOp
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outcomes import Outcomes, op_context
from task_bridge.redaction import Redactor
from task_bridge.retry import RetryPolicy
from task_bridge.targets.base import Call, Delivered, Target

IDLE_POLL_S = 1.0
MIN_WAIT_S = 0.01
STATS_INTERVAL_S = 10.0
SETTLE_AFTER_S = 0.05
"""Longest a result waits for its commit while requests are in flight."""


class StepRenderer(Protocol):
    """Renders a deferred chain step just before it is sent, with the results of the steps
    before it (`task_bridge.rules.chains.ChainRenderer`)."""

    def render(
        self, step: DeferredStep, results: Mapping[str, StepResult]
    ) -> dict[str, Any] | None:
        """The payload to send, or None to skip the step; `TemplateError` dead-letters it."""
        ...


def call_of(op: StoredOp, attempt: int) -> Call:
    """What a target is given for one attempt at a stored op."""
    return Call(op.op_id, op.target, op.op, op.uid, op.payload, attempt)


class Delivery:
    def __init__(
        self,
        outbox: LoopOutbox,
        targets: Mapping[str, Target],
        policy: RetryPolicy,
        *,
        concurrency: int,
        rate_limits: Mapping[str, float],
        logger: logging.Logger,
        metrics: Metrics,
        shutdown_grace: float = 15.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        chains: StepRenderer,
        redact: Redactor | None = None,
    ) -> None:
        """`chains` renders deferred chain steps; `redact`: the config's secrets, masked in
        everything stored (errors, responses)."""
        self.outbox = outbox
        self.targets = targets
        self.concurrency = concurrency
        self.log = logger
        self.metrics = metrics
        self.shutdown_grace = shutdown_grace
        self.clock = clock
        self.chains = chains
        # 1 token per 1/rate seconds, capacity 1: no bursts above the documented limit.
        self.limiters = {name: AsyncLimiter(1, 1.0 / rate) for name, rate in rate_limits.items()}
        self.per_target_cap = {
            name: max(1, min(concurrency, math.ceil(rate * 2)))
            for name, rate in rate_limits.items()
        }
        self.breakers = Breakers(targets, policy, logger)
        self._batching = batch_specs(targets)
        self._tasks: dict[asyncio.Task[None], list[StoredOp]] = {}
        self._ready: deque[list[StoredOp]] = deque()  # claimed jobs not started yet
        self._results: list[OpResult] = []
        self._results_since = 0.0  # monotonic time of the oldest uncommitted result
        self._next_due: float | None = None  # the outbox's next_due_at, read by the last settle
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.outcomes = Outcomes(
            policy, metrics, logger, clock, rng or random.Random(), redact or Redactor()
        )
        self._stats_t = time.monotonic()

    def wake(self) -> None:
        """Thread-safe: new ops were enqueued."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._kick.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        stop_task = asyncio.ensure_future(stop.wait())
        stop_task.add_done_callback(lambda _: self._kick.set())
        try:
            while not stop.is_set():
                # let completions that are already due land first: one outbox transaction
                # for several results, and one claim for several free slots
                await asyncio.sleep(0)
                claimed = await self._settle() if self._should_settle() else 0
                self._start_ready()
                self._report()
                if claimed and len(self._tasks) < self.concurrency:
                    await asyncio.sleep(0)
                    continue
                await self._wait_for_work()
        finally:
            stop_task.cancel()
            await self._drain()

    # -- scheduling ----------------------------------------------------------------------------

    def _should_settle(self) -> bool:
        return (
            not self._tasks
            or len(self._ready) <= self.concurrency // 2
            or len(self._results) >= self.concurrency
            or (bool(self._results) and time.monotonic() - self._results_since >= SETTLE_AFTER_S)
        )

    async def _settle(self) -> int:
        """Hand back the blocked jobs, commit the results and claim, in one outbox transaction
        on the outbox thread; returns the ops claimed. The loop goes on meanwhile: running
        jobs finish (their results wait for the next settle) and queued ones start."""
        self._hand_back_blocked()
        results, self._results = self._results, []
        plan = self._plan()
        try:
            claimed = await self.outbox.run(lambda outbox: settle(outbox, results, plan))
        except Exception:
            self._add_results(results)  # rolled back: they are committed later (or at drain)
            raise
        self._ready.extend(claimed.now)
        self._start_ready()
        self._ready.extend(claimed.ahead)
        self._next_due = claimed.next_due_at
        return claimed.ops

    def _plan(self) -> ClaimPlan:
        """What the next claim may take, from the running and queued jobs and the breakers."""
        now = self.clock()
        busy = self._busy()
        exclude = {t for t, cap in self.per_target_cap.items() if busy[t] >= cap}
        caps = {t: cap - busy[t] for t, cap in self.per_target_cap.items()}
        probing: list[str] = []
        for name in self.breakers.open_targets():
            exclude.add(name)  # breaker open: nothing, or one probe when the pause is over
            paused = self.breakers.paused(name, now)
            if not paused and not busy[name]:
                probing.append(name)
            caps[name] = 0 if paused else 1 - busy[name]
        return ClaimPlan(
            now=now,
            concurrency=self.concurrency,
            free=self.concurrency - len(self._tasks) - len(self._ready),
            exclude=frozenset(exclude),
            probes=tuple(probing),
            everything=self.breakers.targets,
            ahead_exclude=frozenset(exclude | set(self.per_target_cap)),
            slots=self.concurrency - len(self._tasks),
            start_caps=caps,
            queued=tuple(job[0].target for job in self._ready),
            batching=self._batching,
        )

    def _start_ready(self) -> None:
        while len(self._tasks) < self.concurrency:
            job = self._next_ready()
            if job is None:
                return
            task = asyncio.create_task(self._work(job))
            self._tasks[task] = job
            task.add_done_callback(self._on_done)

    def _next_ready(self) -> list[StoredOp] | None:
        """The oldest queued job whose target is neither at its cap nor paused (when its pause
        is over, one job at a time goes out as the probe)."""
        busy: Counter[str] | None = None
        now = self.clock()
        for i, job in enumerate(self._ready):
            name = job[0].target
            breaker = self.breakers.is_open(name)
            if breaker and self.breakers.paused(name, now):
                continue
            cap = 1 if breaker else self.per_target_cap.get(name)
            if cap is not None:
                if busy is None:
                    busy = self._busy()
                if busy[name] >= cap:
                    continue
            del self._ready[i]
            return job
        return None

    async def _work(self, job: list[StoredOp]) -> None:
        """Run a job, then the next queued one, until the queue has none to give."""
        task = asyncio.current_task()
        assert task is not None
        while True:
            self._add_results(await self._run_job(job))
            self._kick.set()
            next_job = self._next_ready()
            if next_job is None:
                return
            job = self._tasks[task] = next_job

    def _hand_back_blocked(self) -> None:
        """Queued jobs of a target paused by its breaker go back to pending, unsent."""
        now = self.clock()
        keep: deque[list[StoredOp]] = deque()
        blocked: list[list[StoredOp]] = []
        for job in self._ready:
            (blocked if self.breakers.paused(job[0].target, now) else keep).append(job)
        if blocked:
            self._ready = keep
            self._hand_back(blocked, error=None)

    def _hand_back(self, jobs: list[list[StoredOp]], error: str | None) -> None:
        now = self.clock()
        self._add_results(
            [
                OpResult(
                    op.seq,
                    "retry",
                    op.attempts,
                    now,
                    next_attempt_at=now,
                    error=error or op.last_error,
                    http_status=op.http_status,
                )
                for job in jobs
                for op in job
            ]
        )

    def _add_results(self, results: list[OpResult]) -> None:
        """Results wait here for the next settle; the oldest one's age bounds that wait."""
        if results and not self._results:
            self._results_since = time.monotonic()
        self._results.extend(results)

    def _busy(self) -> Counter[str]:
        """Running jobs per target."""
        return Counter(job[0].target for job in self._tasks.values())

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._kick.set()
        if not task.cancelled():
            task.result()  # a bug in delivery itself surfaces here

    async def _wait_for_work(self) -> None:
        """Until kicked (a result, new ops, a stop), the next op is due, or IDLE_POLL_S. When
        the next op is due comes from the last settle (no outbox round trip per wait): only a
        settle or new ops (which kick) change it, besides operators' commands (polled)."""
        now = self.clock()
        timeout = IDLE_POLL_S
        if len(self._tasks) < self.concurrency:
            due = self._next_due
            if due is not None:
                timeout = min(timeout, due - now)
            if timeout <= 0:
                # due ops we could not claim: their target is paused or at its cap
                pauses = self.breakers.pauses_left(now)
                timeout = max(MIN_WAIT_S, min([IDLE_POLL_S, *pauses]))
        if self._results:
            timeout = min(timeout, SETTLE_AFTER_S)
        if not self._kick.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout)
        self._kick.clear()

    async def _commit_results(self) -> None:
        if self._results:
            results, self._results = self._results, []
            await self.outbox.complete(results)

    async def _drain(self) -> None:
        """Hand back the queued jobs, let in-flight requests finish (bounded), then commit what
        they learned (G7). With the outbox gone nothing they learn can be stored, and (shared)
        another bridge may be sending their ops by now: they are cancelled at once."""
        queued, self._ready = list(self._ready), deque()
        self._hand_back(queued, error=None)
        if self._tasks:
            grace = self.shutdown_grace if await self._outbox_reachable() else 0.0
            log(
                self.log,
                logging.INFO,
                "delivery.draining",
                inflight=len(self._tasks),
                grace_s=grace,  # 0: the outbox is gone
            )
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                job = self._tasks.get(task, [])
                task.cancel()
                self._hand_back([job], error="interrupted by shutdown")
            if pending:
                await asyncio.wait(pending)
        await self._commit_results()

    async def _outbox_reachable(self) -> bool:
        """Whether the outbox answers a read (results could still be stored)."""
        try:
            await self.outbox.next_due_at()
        except OutboxError:
            return False
        return True

    # -- one operation -------------------------------------------------------------------------

    async def _run_job(self, ops: list[StoredOp]) -> list[OpResult]:
        if len(ops) == 1:
            return [await self._deliver(ops[0])]
        return await self._deliver_batch(ops)

    async def _deliver(self, op: StoredOp) -> OpResult:
        target = self.targets.get(op.target)
        attempts = op.attempts + 1
        if target is None:
            return self.outcomes.dead(op, attempts, f"unknown target '{op.target}'", None)
        if op.deferred is not None:
            try:
                payload = self.chains.render(
                    op.deferred, await self.outbox.chain_steps(op.chain or "")
                )
            except TemplateError as exc:
                reason = f"rule '{op.rule}' action {op.action_index}: {exc}"
                return self.outcomes.dead(op, attempts, reason, None)
            if payload is None:
                log(self.log, logging.DEBUG, "op.skipped", **op_context(op), reason="when is false")
                return OpResult(op.seq, "skipped", attempts, self.clock(), error="skipped: when")
            op = dataclasses.replace(op, payload=payload, deferred=None)
        await self._pace(op.target)
        started = time.monotonic()
        try:
            delivered = await target.send(call_of(op, attempts))
        except PermanentDeliveryError as exc:
            return self.outcomes.dead(op, attempts, str(exc), exc.http_status)
        except TransientDeliveryError as exc:
            self.breakers.failed(op.target, self.clock())
            return self.outcomes.retry(op, attempts, exc)
        except Exception as exc:  # a bug in a target must not lose the op: retry it, loudly
            self._internal_error(op.target, exc)
            return self.outcomes.retry(
                op, attempts, TransientDeliveryError(f"internal error: {exc!r}")
            )
        self.breakers.ok(op.target)
        return self.outcomes.delivered(op, attempts, delivered, time.monotonic() - started)

    async def _deliver_batch(self, ops: list[StoredOp]) -> list[OpResult]:
        """Several ops of one batching target in one request; one result per op."""
        name = ops[0].target
        target = self.targets[name]
        await self._pace(name)
        started = time.monotonic()
        try:
            outcomes = await target.send_batch([call_of(op, op.attempts + 1) for op in ops])
        except PermanentDeliveryError as exc:
            log(self.log, logging.INFO, "batch.split", target=name, ops=len(ops), error=str(exc))
            return [await self._deliver(op) for op in ops]
        except TransientDeliveryError as exc:
            self.breakers.failed(name, self.clock())
            return [self.outcomes.retry(op, op.attempts + 1, exc) for op in ops]
        except Exception as exc:
            self._internal_error(name, exc)
            error = TransientDeliveryError(f"internal error: {exc!r}")
            return [self.outcomes.retry(op, op.attempts + 1, error) for op in ops]
        latency = time.monotonic() - started
        self.breakers.ok(name)
        self.outcomes.stats["batches"] += 1
        results = []
        for op, outcome in zip(ops, outcomes, strict=True):
            attempts = op.attempts + 1
            if isinstance(outcome, Delivered):
                results.append(self.outcomes.delivered(op, attempts, outcome, latency))
            elif isinstance(outcome, TransientDeliveryError):
                results.append(self.outcomes.retry(op, attempts, outcome))
            else:
                results.append(self.outcomes.dead(op, attempts, str(outcome), outcome.http_status))
        return results

    async def _pace(self, target: str) -> None:
        limiter = self.limiters.get(target)
        if limiter is not None:
            await limiter.acquire()

    def _internal_error(self, target: str, exc: Exception) -> None:
        self.log.error(
            "target.error",
            exc_info=exc,
            extra={"ctx": {"target": target, "error": repr(exc)}},
        )

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._stats_t < STATS_INTERVAL_S:
            return
        stats = self.outcomes.stats
        if stats:
            log(
                self.log,
                logging.INFO,
                "delivery.progress",
                inflight=len(self._tasks),
                **dict(stats),
            )
        stats.clear()
        self._stats_t = now
