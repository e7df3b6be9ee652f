"""The outbox protocol, by role: durable operations + source checkpoint, committed together.

Each caller sees the slice it uses: `IngestOutbox` (ingest and its writer), `DeliveryOutbox`
(the delivery loop), `HousekeepingOutbox` (the app's periodic upkeep), `OperatorOutbox`
(the CLI's `status` and `outbox` commands) and `RemoteStore` (what targets keep: the same
methods as `targets.base.TargetStore`). `Outbox` is all of them plus `transaction` and `close`:
what `open_outbox` returns. Two implementations exist: SQLite (`sqlite.py`, one bridge) and
Postgres (`postgres.py`, shared by several bridges): `shared.py` over `statements.py`.

An instance belongs to one thread at a time; the app opens one per thread (ingest, delivery,
CLI) on the same URL. A `transaction()` belongs to the thread that opened it: a call on the
instance from another thread while it is open raises `OutboxError` (never joins it silently).

Life cycle of an op (ordering key `seq`: insertion order = source order)::

    put ─┬─▶ pending ──claim──▶ inflight ──delivered──▶ delivered
         │    ▲ ▲ ▲                │ │ │
         │    │ │ └────retry───────┘ │ └──skipped (target said so)──▶ skipped
         │    │ │  (reset/reclaim)   └──failed for good──▶ dead ◀── put (rule error)
         │    │ └── operator retry ──────────────────────────┘
         │    └──── unpark (the dead op before it retried or discarded) ── parked
         ├─▶ parked   (its task has a dead or parked op; a new dead op parks later pending)
         └─▶ waiting  (chain step) ──steps before it finished──▶ pending
                                   ──chain stopped─────────────▶ skipped

- pending: due for delivery at `next_attempt_at`; only the head of its (target, uid) is
  claimed. inflight: claimed by a delivery loop. delivered / skipped: finished; the task's
  next op becomes its head. dead: failed for good, until an operator redrives or discards it.
  parked: behind a dead op of the same (target, uid). waiting: a chain step whose earlier
  steps are not finished yet.
- Head of a (target, uid): `head = 1` marks its earliest OPEN op (not delivered/skipped).
  Only CLAIMABLE (pending) heads are claimed, so one task's ops reach the API one at a time,
  in source order (G4). A task with a BLOCKING (dead/parked) op parks its new ops.

Chains (the actions of one rule for one event, SPEC section 5) share a `chain` key. A chain's
ops are stored `waiting`; the outbox makes the next one `pending` when the one before it is
delivered or `skipped`, or dead with `on_error: skip`. A dead step with `on_error: stop` marks
the rest `skipped`; with `retry` (default) the chain waits for an operator's redrive. Each
step's response is kept for later steps (`steps.<id>.response`).

The status sets the SQL is built from are named here once (`OPEN`, `FINISHED`, `BLOCKING`,
`CLAIMABLE`, `TERMINAL`, `RETRYABLE`, `DISCARDABLE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

from task_bridge.operations import DeferredStep, Operation, StepResult

Status = Literal["pending", "inflight", "delivered", "dead", "parked", "waiting", "skipped"]
STATUSES: tuple[Status, ...] = (
    "pending",
    "inflight",
    "delivered",
    "dead",
    "parked",
    "waiting",
    "skipped",
)

FINISHED: tuple[Status, ...] = ("delivered", "skipped")
"""An op in one of these no longer holds its task: the next op of the (target, uid) is head."""
OPEN: tuple[Status, ...] = tuple(s for s in STATUSES if s not in FINISHED)
"""Not finished: the earliest OPEN op of a (target, uid) is its head; later ones wait behind it."""
BLOCKING: tuple[Status, ...] = ("dead", "parked")
"""A (target, uid) with an op in one of these parks its later ops (until an operator acts)."""
CLAIMABLE: Status = "pending"
"""The status of a claimable op (when it is its task's head and due)."""
TERMINAL: tuple[Status, ...] = ("delivered", "dead", "skipped")
"""Delivery has settled the op: a chain step in one of these has a result for later steps."""
RETRYABLE: tuple[Status, ...] = BLOCKING
"""What an operator's `retry` / `retry_dead` sends back to pending."""
DISCARDABLE: tuple[Status, ...] = ("pending", "dead", "parked", "waiting")
"""What an operator may delete (not inflight: a delivery loop holds it; not finished)."""


@dataclass(frozen=True, slots=True)
class StoredOp:
    seq: int
    op_id: str
    target: str
    op: str
    uid: str
    rule: str
    action_index: int
    position: str
    payload: dict[str, Any]
    status: Status
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    http_status: int | None
    chain: str | None = None
    step_id: str | None = None
    deferred: DeferredStep | None = None
    """A chain step rendered at send time (`payload` is then empty)."""


@dataclass(frozen=True, slots=True)
class OpResult:
    """What delivery learned about one claimed op. `outcome` decides the new status."""

    seq: int
    outcome: Literal["delivered", "retry", "dead", "skipped"]
    attempts: int
    now: float
    next_attempt_at: float = 0.0
    error: str | None = None
    http_status: int | None = None
    remote_id: str | None = None
    response: Any = None
    """The API's answer; stored for chain steps only."""


class IngestOutbox(Protocol):
    """What ingest (and its `OutboxWriter`) uses: store ops with the checkpoint, read it back."""

    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        """Insert ops (insert-or-ignore by op_id; `op.error` set -> stored dead) and, when
        `checkpoint` is given, store it for `source`, all in one transaction. New ops of a
        (target, uid) that has a BLOCKING op are stored parked. An `events.Checkpoint`
        decides what is stored (its `merge` with the stored text, in the same transaction);
        a plain str replaces the stored one.
        Returns rows inserted."""
        ...

    def get_checkpoint(self, source: str) -> str | None: ...

    def maintain(self) -> None:
        """Upkeep the ingest writer runs after its commits, outside the write lock (SQLite:
        a WAL checkpoint at most every second). May do nothing."""
        ...


class DeliveryOutbox(Protocol):
    """What the delivery loop uses: claim heads, record results, read chain results."""

    def claim_due(
        self,
        now: float,
        limit: int,
        exclude_targets: Sequence[str] = (),
        *,
        target: str | None = None,
        ops: Sequence[str] = (),
    ) -> list[StoredOp]:
        """Mark up to `limit` due pending ops inflight and return them, oldest first. Only the
        head of each (target, uid) is eligible: no earlier OPEN op of it.
        `target` / `ops` narrow the claim to one target / those op kinds (batching)."""
        ...

    def complete(self, results: Sequence[OpResult]) -> None:
        """Apply results in one transaction; dead parks later pending ops of the same UID;
        a remote id is stored in the task map."""
        ...

    def chain_steps(self, chain: str) -> dict[str, StepResult]:
        """Results of the TERMINAL steps (with an `id`) of one chain, by step id."""
        ...

    def next_due_at(self) -> float | None:
        """Earliest next_attempt_at among claimable ops (pending heads of their (target, uid)),
        or None."""
        ...

    def reset_inflight(self) -> int:
        """Crash recovery: inflight -> pending. Returns how many."""
        ...

    def reclaim_orphans(self) -> int:
        """While running: inflight ops claimed by a process that has died since (one sharing
        this outbox) -> pending. Returns how many (0 where one process owns the outbox)."""
        ...

    def transaction(self) -> AbstractContextManager[Self]:
        """`with outbox.transaction() as tx:` the writes made through `tx` (the outbox
        itself) inside run as one transaction, on the thread that opened it only."""
        ...


class HousekeepingOutbox(Protocol):
    """What the app's periodic upkeep uses: gauges and the retention purge."""

    def counts(self) -> dict[str, int]:
        """Ops per status; every status is a key, 0 included."""
        ...

    def oldest_pending_created_at(self) -> float | None:
        """created_at of the oldest pending or inflight op (by seq: source order)."""
        ...

    def purge(self, statuses: Sequence[Status], older_than: float) -> int:
        """Delete ops in `statuses` last updated before `older_than` (epoch seconds)."""
        ...


class OperatorOutbox(HousekeepingOutbox, Protocol):
    """What the operator CLI uses: inspect, redrive, discard, purge, status."""

    def get(self, op_id: str) -> StoredOp | None: ...

    def list(self, status: Status | None = None, limit: int = 100) -> list[StoredOp]: ...

    def retry(self, op_id: str, now: float) -> bool:
        """RETRYABLE op -> pending now (attempts reset), and unpark its UID's later ops."""
        ...

    def retry_dead(self, now: float) -> int:
        """Every RETRYABLE op -> pending now, attempts reset. Returns how many."""
        ...

    def discard(self, op_id: str) -> bool:
        """Delete a DISCARDABLE op (operator's decision); unparks the UID if it was dead."""
        ...

    def get_checkpoint(self, source: str) -> str | None: ...

    def close(self) -> None: ...


class RemoteStore(Protocol):
    """What targets keep in the outbox database: remote ids and small state (cursors, started
    automation executions). Structurally `targets.base.TargetStore`."""

    def get_remote_id(self, target: str, uid: str) -> str | None: ...

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None: ...

    def get_state(self, key: str) -> str | None:
        """Small key/value store for cursors and target bookkeeping."""
        ...

    def set_state(self, key: str, value: str) -> None: ...


class Outbox(IngestOutbox, DeliveryOutbox, OperatorOutbox, RemoteStore, Protocol):
    """Every role, plus `close`: what `open_outbox` returns (one instance per thread)."""

    def close(self) -> None: ...
