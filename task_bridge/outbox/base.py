"""The outbox protocol: durable operations + source checkpoint, committed together.

Required members are listed on `Outbox`. An implementation is used from one thread only;
the app opens one instance per thread (ingest, delivery, CLI) on the same URL. Two exist:
SQLite (`sqlite.py`, one bridge) and Postgres (`postgres.py`, shared by several bridges),
over the statements in `sql.py`.

Statuses: pending -> inflight -> delivered | pending (retry) | dead; `parked` = waiting behind a
dead op of the same (target, uid). Ordering key is `seq` (insertion order = source order).

Chains (the actions of one rule for one event, SPEC section 5) share a `chain` key. A chain's
ops are stored `waiting`; the outbox makes the next one `pending` when the one before it is
delivered or `skipped`, or dead with `on_error: skip`. A dead step with `on_error: stop` marks
the rest `skipped`; with `retry` (default) the chain waits for an operator's redrive. Each
step's response is kept for later steps (`steps.<id>.response`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from task_bridge.operations import Operation, StepResult

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


class Outbox(Protocol):
    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        """Insert ops (insert-or-ignore by op_id; `op.error` set -> stored dead) and, when
        `checkpoint` is given, store it for `source`, all in one transaction. New ops of a
        (target, uid) that has a dead/parked op are stored parked. A checkpoint that is a JSON
        object is merged key by key into the stored one (Kafka partitions, which bridges
        sharing an outbox split among them). Returns rows inserted."""
        ...

    def get_checkpoint(self, source: str) -> str | None: ...

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
        head of each (target, uid) is eligible: no earlier op of it pending/inflight/dead/parked.
        `target` / `ops` narrow the claim to one target / those op kinds (batching)."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """The writes the calling thread makes inside run as one transaction."""
        ...

    def complete(self, results: Sequence[OpResult]) -> None:
        """Apply results in one transaction; dead parks later pending ops of the same UID;
        a remote id is stored in the task map."""
        ...

    def chain_steps(self, chain: str) -> dict[str, StepResult]:
        """Results of the finished steps (with an `id`) of one chain, by step id."""
        ...

    def reset_inflight(self) -> int:
        """Crash recovery: inflight -> pending. Returns how many."""
        ...

    def reclaim_orphans(self) -> int:
        """While running: inflight ops claimed by a process that has died since (one sharing
        this outbox) -> pending. Returns how many (0 where one process owns the outbox)."""
        ...

    def maintain(self) -> None:
        """Upkeep the ingest writer runs after its commits, outside the write lock (SQLite:
        a WAL checkpoint at most every second). May do nothing."""
        ...

    def next_due_at(self) -> float | None:
        """Earliest next_attempt_at among claimable ops (pending heads of their (target, uid)),
        or None."""
        ...

    def get(self, op_id: str) -> StoredOp | None: ...

    def list(self, status: Status | None = None, limit: int = 100) -> list[StoredOp]: ...

    def retry(self, op_id: str, now: float) -> bool:
        """dead/parked op -> pending now (attempts reset), and unpark its UID's later ops."""
        ...

    def retry_dead(self, now: float) -> int: ...

    def discard(self, op_id: str) -> bool:
        """Delete a dead/parked/pending op (operator's decision); unparks the UID if it was dead."""
        ...

    def purge(self, statuses: Sequence[Status], older_than: float) -> int:
        """Delete ops in `statuses` last updated before `older_than` (epoch seconds)."""
        ...

    def counts(self) -> dict[str, int]: ...

    def oldest_pending_created_at(self) -> float | None: ...

    def get_remote_id(self, target: str, uid: str) -> str | None: ...

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None: ...

    def get_state(self, key: str) -> str | None:
        """Small key/value store for cursors and target bookkeeping."""
        ...

    def set_state(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...
