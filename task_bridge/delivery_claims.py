"""Delivery's settle, the outbox's part: commit the results, then claim, in one transaction.

Delivery decides on the event loop what a settle may claim and snapshots it in a `ClaimPlan`
(free slots, targets left out, probes, which queued jobs could start); `settle` carries the
plan out on the outbox thread (`LoopOutbox.run`) and returns the claimed jobs, which delivery
queues on the loop. Nothing here reads or writes delivery's own state: the plan is a copy.

The claims, in order: ops for the free slots; one probe per target whose breaker pause is over;
then, when the free slots took all they asked for, up to `concurrency` jobs ahead (not for
rate-limited targets, whose pace the cap keeps). Batchable ops are grouped per target and
topped up with more due ops of that kind (one job per `max_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from task_bridge.outbox.base import OpResult, Outbox, StoredOp
from task_bridge.targets.base import Target, batch_size_of

Job = list[StoredOp]


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """Which ops a batching target takes several of per request, and how many."""

    ops: frozenset[str]
    size: int


def batch_specs(targets: Mapping[str, Target]) -> dict[str, BatchSpec]:
    """The batching targets' specs (fixed at startup: read once, on the loop)."""
    specs = {}
    for name, target in targets.items():
        ops = target.batch_ops
        size = max((batch_size_of(target, op) for op in ops), default=1)
        if size > 1:
            specs[name] = BatchSpec(ops, size)
    return specs


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What one settle may claim, decided on the loop from delivery's state at that moment."""

    now: float
    concurrency: int
    free: int
    """Slots neither running nor queued (may be <= 0)."""
    exclude: frozenset[str]
    """Targets at their cap or with an open breaker: nothing claimed for the free slots."""
    probes: tuple[str, ...]
    """Open breakers whose pause is over and that run nothing: one op each."""
    everything: frozenset[str]
    ahead_exclude: frozenset[str]
    """`exclude` and the rate-limited targets: nothing claimed ahead for them."""
    slots: int
    """Task slots not running."""
    start_caps: Mapping[str, int] = field(default_factory=dict)
    """Jobs each limited target (cap, open breaker) may still start now."""
    queued: tuple[str, ...] = ()
    """The targets of the jobs queued, oldest first."""
    batching: Mapping[str, BatchSpec] = field(default_factory=dict)

    def left_queued(self, jobs: Sequence[Job]) -> int:
        """How many jobs stay queued once the queue and `jobs` start as far as slots and
        caps allow (as delivery's `_start_ready` does: oldest first)."""
        slots, caps, left = self.slots, dict(self.start_caps), 0
        for name in (*self.queued, *(job[0].target for job in jobs)):
            cap = caps.get(name)
            if slots > 0 and (cap is None or cap > 0):
                slots -= 1
                if cap is not None:
                    caps[name] = cap - 1
            else:
                left += 1
        return left


@dataclass(frozen=True, slots=True)
class Claimed:
    now: list[Job]
    """Jobs for the free slots and the probes: queued before delivery starts jobs."""
    ahead: list[Job]
    """Jobs claimed ahead: queued after."""
    ops: int
    """Ops claimed for the free slots and ahead (not probes, not batch top-ups)."""
    next_due_at: float | None
    """The outbox's `next_due_at` after these claims: how long delivery may wait for more."""


def settle(outbox: Outbox, results: Sequence[OpResult], plan: ClaimPlan) -> Claimed:
    """Commit `results`, then claim what `plan` allows, then read when the next op is due.
    Runs inside one outbox transaction (`LoopOutbox.run`): the results land before the claim,
    which can take the next op of a task just delivered."""
    if results:
        outbox.complete(results)
    now, everything = plan.now, plan.everything
    jobs: list[Job] = []
    claimed = 0
    # Nothing to claim while every target is paused or at its cap: skip the query (with a
    # large backlog it scans every pending head and holds the write lock ingest needs).
    if plan.free > 0 and not plan.exclude >= everything:
        ops = outbox.claim_due(now, plan.free, sorted(plan.exclude))
        claimed = len(ops)
        jobs += batched(outbox, ops, plan)
    for name in plan.probes:
        jobs += batched(outbox, outbox.claim_due(now, 1, sorted(everything - {name})), plan)
    # Ahead, when the free slots took all there was to take (else nothing more is due).
    ahead: list[Job] = []
    room = plan.concurrency - plan.left_queued(jobs)
    if room > 0 and claimed >= plan.free and not plan.ahead_exclude >= everything:
        ops = outbox.claim_due(now, room, sorted(plan.ahead_exclude))
        claimed += len(ops)
        ahead = batched(outbox, ops, plan)
    return Claimed(jobs, ahead, claimed, outbox.next_due_at())


def batched(outbox: Outbox, ops: list[StoredOp], plan: ClaimPlan) -> list[Job]:
    """Claimed ops -> jobs: batchable ops grouped per target, topped up with more due ones."""
    jobs: list[Job] = []
    groups: dict[str, list[StoredOp]] = {}
    for op in ops:
        spec = plan.batching.get(op.target)
        if spec is not None and op.op in spec.ops and op.deferred is None:
            groups.setdefault(op.target, []).append(op)
        else:
            jobs.append([op])
    for name, group in groups.items():
        spec = plan.batching[name]
        group += outbox.claim_due(
            plan.now, len(group) * (spec.size - 1), target=name, ops=sorted(spec.ops)
        )
        group.sort(key=lambda op: op.seq)
        jobs += [group[i : i + spec.size] for i in range(0, len(group), spec.size)]
    return jobs
