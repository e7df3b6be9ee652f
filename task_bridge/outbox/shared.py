"""The outbox over SQL, shared by the SQLite and Postgres backends: the bookkeeping around the
statements of `statements.py`.

Per-task order (G4): `head = 1` marks the earliest OPEN op of each (target, uid) (see the life
cycle in `base.py`). Only pending heads are claimed, so claiming and `next_due_at` are index
range reads however large the backlog is. Every statement that removes an op from the open
set (delivered, discarded, purged) promotes the next op of its task.

A backend supplies its `Statements` (rendered for its dialect), the connection plumbing (`_tx`,
`_read`) and the batch insert (`_insert`); every write runs in `_tx`, one transaction at a
time per outbox (SQLite's single writer; a lock on Postgres). A transaction belongs to the
thread that opened it (`_joins`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, Self

from task_bridge.errors import OutboxError
from task_bridge.events import Checkpoint
from task_bridge.operations import Operation, StepResult
from task_bridge.outbox.base import FINISHED, STATUSES, OpResult, Status, StoredOp
from task_bridge.outbox.rows import encode_op, encode_response, row_to_op
from task_bridge.outbox.statements import CREATE_STATE, Statements


class Executor(Protocol):
    """What a backend's transaction hands the shared code: sqlite3's connection, or a
    psycopg cursor. Statements come rendered for the backend (`Statements`)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


def advance_chain(q: Statements, c: Executor, chain: str, now: float) -> None:
    """Start the next step of a chain once the steps before it are finished.

    Finished: delivered, skipped, or dead with `on_error: skip`. A dead step with `stop`
    skips the rest; with `retry` the chain waits (an operator's `retry` redrives the step).
    """
    rows = c.execute(q.chain_ops, (chain,)).fetchall()
    for i, (seq, status, on_error, step_id, target, uid) in enumerate(rows):
        if status in FINISHED or (status == "dead" and on_error == "skip"):
            continue
        if status == "dead" and on_error == "stop":
            reason = f"skipped: chain stopped, step {step_id or i} failed"
            for later, later_status, *_, t, u in rows[i + 1 :]:
                if later_status == "waiting":
                    c.execute(q.skip_step, (now, reason, later))
                    c.execute(q.promote, (t, u))
            return
        if status == "waiting":
            blocked = c.execute(q.blocked_before, (target, uid, seq)).fetchone()
            c.execute(q.start_step, ("parked" if blocked else "pending", now, now, seq))
        return


class SqlOutbox:
    """`task_bridge.outbox.base.Outbox` over SQL; subclasses connect (see the module docstring)."""

    sql: Statements
    """The statements in the backend's dialect (a class attribute of each backend)."""

    _tx_thread: int | None = None
    """The thread inside `_tx`, if any (set by the backend's `_tx`)."""

    def _claim_params(self) -> tuple[Any, ...]:
        """Values of the `Statements.claim_set` assignments."""
        return ()

    # -- backend plumbing ----------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[Executor]:
        """One write transaction; database errors become OutboxError. Inside `transaction()`
        on the same thread, part of that one (`_joins`)."""
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _encode(self, ops: Sequence[Operation], now: float) -> Any:
        """The ops as `_insert` takes them (done before the transaction starts)."""
        return [encode_op(op, now) for op in ops]

    def _insert(self, c: Executor, encoded: Any) -> int:
        """Insert-or-ignore the encoded ops in order; returns how many were new."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _joins(self) -> bool:
        """Whether this call runs inside the open transaction (the caller's thread opened it).

        A call from another thread while a transaction is open raises: it would otherwise run
        on the same connection in the middle of that transaction (Postgres: silently part of
        it; SQLite: reading its uncommitted writes). An instance belongs to one thread at a time.
        """
        owner = self._tx_thread
        if owner is None:
            return False
        if owner == threading.get_ident():
            return True
        raise OutboxError(
            f"outbox used from thread {threading.get_ident()} while thread {owner} has a"
            " transaction open on it: an outbox instance belongs to one thread at a time"
        )

    def _schema_version(self, c: Executor, known: int, where: str) -> int | None:
        """The stored schema version (None: a new outbox); a newer one than `known` is refused."""
        c.execute(CREATE_STATE)
        row = c.execute(self.sql.schema_version).fetchone()
        version = int(row[0]) if row is not None else None
        if version is not None and version > known:
            raise OutboxError(
                f"outbox {where} has schema version {version}, this bridge knows up to"
                f" {known}: upgrade the bridge"
            )
        return version

    def _create(self, c: Executor, statements: Sequence[str], version: int) -> None:
        for statement in statements:
            c.execute(statement)
        c.execute(self.sql.set_state, ("schema_version", str(version)))

    @contextmanager
    def transaction(self) -> Iterator[Self]:
        """`with outbox.transaction() as tx:` the writes made through `tx` (this outbox) inside
        run as one transaction, committed at the end, rolled back by an exception. It belongs
        to the thread that opened it: a call from another thread meanwhile raises OutboxError.
        Nested, it is part of the outer one."""
        with self._tx():
            yield self

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._read(sql, params)
        return rows[0][0] if rows else None

    # -- ingest side ---------------------------------------------------------------------------

    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        encoded = self._encode(ops, now) if ops else None
        q = self.sql
        with self._tx() as c:
            inserted = self._insert(c, encoded) if ops else 0
            for chain in dict.fromkeys(op.chain for op in ops if op.chain is not None):
                advance_chain(q, c, chain, now)
            if checkpoint is not None:
                if isinstance(checkpoint, Checkpoint):  # the source owns the merge
                    stored = c.execute(q.get_checkpoint, (source,)).fetchone()
                    checkpoint = checkpoint.merge(None if stored is None else str(stored[0]))
                c.execute(q.store_checkpoint, (source, checkpoint, now))
        return inserted

    def get_checkpoint(self, source: str) -> str | None:
        value = self._scalar(self.sql.get_checkpoint, (source,))
        return None if value is None else str(value)

    # -- delivery side -------------------------------------------------------------------------

    def claim_due(
        self,
        now: float,
        limit: int,
        exclude_targets: Sequence[str] = (),
        *,
        target: str | None = None,
        ops: Sequence[str] = (),
    ) -> list[StoredOp]:
        if limit <= 0:
            return []
        statement = self.sql.claim(len(exclude_targets), target is not None, len(ops))
        params = [now, *self._claim_params(), now, *exclude_targets]
        if target is not None:
            params.append(target)
        with self._tx() as c:
            rows = c.execute(statement, (*params, *ops, limit)).fetchall()
        return sorted((row_to_op(r) for r in rows), key=lambda op: op.seq)

    def complete(self, results: Sequence[OpResult]) -> None:
        if not results:
            return
        q = self.sql
        with self._tx() as c:
            for r in results:
                found = c.execute(q.find_seq, (r.seq,)).fetchone()
                if found is None:  # discarded by an operator meanwhile
                    continue
                target, uid, chain = found
                response = encode_response(r.response) if chain is not None else None
                if r.outcome in ("delivered", "skipped"):
                    error = r.error if r.outcome == "skipped" else None
                    c.execute(
                        q.finish,
                        (r.outcome, r.attempts, r.now, error, r.http_status, response, r.seq),
                    )
                    c.execute(q.promote, (target, uid))
                    if r.remote_id is not None:
                        c.execute(q.set_remote_id, (target, uid, r.remote_id))
                elif r.outcome == "retry":
                    c.execute(
                        q.retry_later,
                        (r.attempts, r.next_attempt_at, r.now, r.error, r.http_status, r.seq),
                    )
                else:
                    c.execute(q.kill, (r.attempts, r.now, r.error, r.http_status, response, r.seq))
                    c.execute(q.park_later, (r.now, target, uid, r.seq))
                if chain is not None and r.outcome != "retry":
                    advance_chain(q, c, chain, r.now)

    def chain_steps(self, chain: str) -> dict[str, StepResult]:
        return {
            step_id: StepResult(
                ok=status == "delivered",
                status=http_status,
                response=None if response is None else json.loads(response),
            )
            for step_id, status, http_status, response in self._read(self.sql.chain_steps, (chain,))
        }

    def reset_inflight(self) -> int:
        with self._tx() as c:
            count: int = c.execute(self.sql.reset_inflight).rowcount
        return count

    def reclaim_orphans(self) -> int:
        """One process owns a SQLite outbox: no other claimer can have died."""
        return 0

    def maintain(self) -> None:
        """Nothing to do by default."""

    def next_due_at(self) -> float | None:
        """Earliest next_attempt_at among claimable ops (pending heads of their task), or None.

        Ops queued behind an inflight op of their task are not counted: they become due when
        that op completes, so a caller waiting on this value never spins on them.
        """
        value = self._scalar(self.sql.next_due_at)
        return None if value is None else float(value)

    # -- operator side -------------------------------------------------------------------------

    def get(self, op_id: str) -> StoredOp | None:
        rows = self._read(self.sql.get, (op_id,))
        return row_to_op(rows[0]) if rows else None

    def list(self, status: Status | None = None, limit: int = 100) -> list[StoredOp]:
        """Newest first."""
        if status is None:
            rows = self._read(self.sql.list_all, (limit,))
        else:
            rows = self._read(self.sql.list_status, (status, limit))
        return [row_to_op(r) for r in rows]

    def retry(self, op_id: str, now: float) -> bool:
        with self._tx() as c:
            row = c.execute(self.sql.find_retryable, (op_id,)).fetchone()
            if row is None:
                return False
            c.execute(self.sql.requeue, (now, now, op_id))
            self._unpark(c, row[0], row[1], now)
        return True

    def _unpark(self, c: Executor, target: str, uid: str, now: float) -> None:
        """Parked ops of a task go back to pending, up to its next dead op (if any)."""
        next_dead = c.execute(self.sql.next_dead, (target, uid)).fetchone()[0]
        before = next_dead if next_dead is not None else 2**62
        c.execute(self.sql.unpark, (now, now, target, uid, before))

    def retry_dead(self, now: float) -> int:
        """Every dead and parked op -> pending now, attempts reset. Returns how many."""
        with self._tx() as c:
            count: int = c.execute(self.sql.requeue_all, (now, now)).rowcount
        return count

    def discard(self, op_id: str) -> bool:
        q = self.sql
        with self._tx() as c:
            row = c.execute(q.find_discardable, (op_id,)).fetchone()
            if row is None:
                return False
            target, uid, status, chain = row
            c.execute(q.delete, (op_id,))
            now = time.time()
            if status == "dead":
                self._unpark(c, target, uid, now)
            c.execute(q.promote, (target, uid))
            if chain is not None:
                advance_chain(q, c, chain, now)  # the operator gave up on this step: go on
        return True

    def purge(self, statuses: Sequence[Status], older_than: float) -> int:
        unknown = set(statuses) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown statuses {sorted(unknown)}")
        if not statuses:
            return 0
        with self._tx() as c:
            purged: int = c.execute(self.sql.purge(len(statuses)), (*statuses, older_than)).rowcount
            if purged and set(statuses) != {"delivered"}:
                # open ops were deleted: unpark ops no longer behind a dead op, mark heads
                c.execute(self.sql.unpark_free)
                c.execute(self.sql.mark_heads)
        return purged

    def counts(self) -> dict[str, int]:
        """Ops per status; every status is a key, 0 included."""
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for status, n in self._read(self.sql.counts):
            out[status] = n
        return out

    def oldest_pending_created_at(self) -> float | None:
        """created_at of the oldest pending or inflight op (by seq: source order)."""
        value = self._scalar(self.sql.oldest_open_created_at)
        return None if value is None else float(value)

    # -- target store --------------------------------------------------------------------------

    def get_remote_id(self, target: str, uid: str) -> str | None:
        value = self._scalar(self.sql.get_remote_id, (target, uid))
        return None if value is None else str(value)

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None:
        with self._tx() as c:
            c.execute(self.sql.set_remote_id, (target, uid, remote_id))

    def get_state(self, key: str) -> str | None:
        value = self._scalar(self.sql.get_state, (key,))
        return None if value is None else str(value)

    def set_state(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(self.sql.set_state, (key, value))
