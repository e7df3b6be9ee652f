"""What the SQLite and Postgres outboxes share: the statements and the bookkeeping around them.

Per-task order (G4): `head = 1` marks the earliest open (not delivered) op of each
(target, uid). Only pending heads are claimed, so claiming and `next_due_at` are index
range reads however large the backlog is. Every statement that removes an op from the open
set (delivered, discarded, purged) promotes the next op of its task.

Statements are written for SQLite (`?` placeholders, `INDEXED BY` hints); the Postgres
outbox rewrites them once each (see `postgres.py`). A backend supplies the connection
plumbing (`_tx`, `_read`) and the batch insert (`_insert`); every write runs in `_tx`,
one transaction at a time per outbox (SQLite's single writer; a lock on Postgres).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from task_bridge.errors import OutboxError
from task_bridge.operations import Operation, StepResult
from task_bridge.outbox.base import STATUSES, OpResult, Status, StoredOp
from task_bridge.outbox.rows import encode_op, encode_response, merge_checkpoint, row_to_op

COLUMNS = (
    "seq, op_id, target, uid, op, rule, action_index, position, payload, status, attempts,"
    " next_attempt_at, created_at, updated_at, last_error, http_status, chain, step_id"
)

PROMOTE = """
UPDATE ops SET head = 1 WHERE head = 0 AND seq = (
    SELECT MIN(seq) FROM ops WHERE target = ? AND uid = ?
    AND status NOT IN ('delivered', 'skipped'))
"""

# The indexes and the small tables, the same on both backends (each adds its `ops` table).
INDEXES = (
    # claim_due: pending heads in seq order; next_due_at: pending heads by due time.
    "CREATE INDEX IF NOT EXISTS ops_ready ON ops (seq) WHERE status = 'pending' AND head = 1",
    "CREATE INDEX IF NOT EXISTS ops_ready_due ON ops (next_attempt_at)"
    " WHERE status = 'pending' AND head = 1",
    # Per-(target, uid, seq) lookups among open ops; dead/parked ops per task (a tiny index).
    "CREATE INDEX IF NOT EXISTS ops_open2 ON ops (target, uid, seq)"
    " WHERE status NOT IN ('delivered', 'skipped')",
    "CREATE INDEX IF NOT EXISTS ops_chain ON ops (chain, seq) WHERE chain IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ops_blocked ON ops (target, uid, seq)"
    " WHERE status IN ('dead', 'parked')",
    # list/counts/purge by status, oldest pending.
    "CREATE INDEX IF NOT EXISTS ops_status ON ops (status, seq)",
)
SIDE_TABLES = (
    """CREATE TABLE IF NOT EXISTS checkpoints (
        source      TEXT PRIMARY KEY,
        position    TEXT NOT NULL,
        updated_at  DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS task_map (
        target      TEXT NOT NULL,
        uid         TEXT NOT NULL,
        remote_id   TEXT NOT NULL,
        PRIMARY KEY (target, uid))""",
    """CREATE TABLE IF NOT EXISTS state (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL)""",
)

STORE_CHECKPOINT = (
    "INSERT INTO checkpoints (source, position, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (source) DO UPDATE SET position = excluded.position,"
    " updated_at = excluded.updated_at"
)


class Executor(Protocol):
    """What a backend's transaction hands the shared code: sqlite3's connection, or a
    psycopg cursor behind the Postgres outbox's rewriting of statements."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


def advance_chain(c: Executor, chain: str, now: float) -> None:
    """Start the next step of a chain once the steps before it are finished.

    Finished: delivered, skipped, or dead with `on_error: skip`. A dead step with `stop`
    skips the rest; with `retry` the chain waits (an operator's `retry` redrives the step).
    """
    rows = c.execute(
        "SELECT seq, status, on_error, step_id, target, uid FROM ops INDEXED BY ops_chain"
        " WHERE chain = ? ORDER BY seq",
        (chain,),
    ).fetchall()
    for i, (seq, status, on_error, step_id, target, uid) in enumerate(rows):
        if status in ("delivered", "skipped") or (status == "dead" and on_error == "skip"):
            continue
        if status == "dead" and on_error == "stop":
            reason = f"skipped: chain stopped, step {step_id or i} failed"
            for later, later_status, *_, t, u in rows[i + 1 :]:
                if later_status == "waiting":
                    c.execute(
                        "UPDATE ops SET status = 'skipped', head = 0, updated_at = ?,"
                        " last_error = ? WHERE seq = ?",
                        (now, reason, later),
                    )
                    c.execute(PROMOTE, (t, u))
            return
        if status == "waiting":
            blocked = c.execute(
                "SELECT 1 FROM ops INDEXED BY ops_blocked WHERE target = ? AND uid = ?"
                " AND status IN ('dead', 'parked') AND seq < ? LIMIT 1",
                (target, uid, seq),
            ).fetchone()
            c.execute(
                "UPDATE ops SET status = ?, next_attempt_at = ?, updated_at = ? WHERE seq = ?",
                ("parked" if blocked else "pending", now, now, seq),
            )
        return


class SqlOutbox:
    """`task_bridge.outbox.base.Outbox` over SQL; subclasses connect (see the module docstring)."""

    _CLAIM_SET = ""
    """Extra `SET` assignments of a claim (the Postgres outbox records the claimer)."""

    def _claim_params(self) -> tuple[Any, ...]:
        return ()

    # -- backend plumbing ----------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[Executor]:
        """One write transaction; database errors become OutboxError. Inside `transaction()`
        on the same thread, part of that one."""
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

    def _schema_version(self, c: Executor, known: int, where: str) -> int | None:
        """The stored schema version (None: a new outbox); a newer one than `known` is refused."""
        c.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = c.execute("SELECT value FROM state WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row is not None else None
        if version is not None and version > known:
            raise OutboxError(
                f"outbox {where} has schema version {version}, this bridge knows up to"
                f" {known}: upgrade the bridge"
            )
        return version

    @staticmethod
    def _create(c: Executor, statements: Sequence[str], version: int) -> None:
        for statement in statements:
            c.execute(statement)
        c.execute(
            "INSERT INTO state (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(version),),
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes this thread makes inside run as one transaction."""
        with self._tx():
            yield

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._read(sql, params)
        return rows[0][0] if rows else None

    # -- ingest side ---------------------------------------------------------------------------

    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        encoded = self._encode(ops, now) if ops else None
        with self._tx() as c:
            inserted = self._insert(c, encoded) if ops else 0
            for chain in dict.fromkeys(op.chain for op in ops if op.chain is not None):
                advance_chain(c, chain, now)
            if checkpoint is not None:
                if checkpoint.startswith("{"):
                    stored = c.execute(
                        "SELECT position FROM checkpoints WHERE source = ?", (source,)
                    ).fetchone()
                    checkpoint = merge_checkpoint(stored and stored[0], checkpoint)
                c.execute(STORE_CHECKPOINT, (source, checkpoint, now))
        return inserted

    def get_checkpoint(self, source: str) -> str | None:
        value = self._scalar("SELECT position FROM checkpoints WHERE source = ?", (source,))
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
        where, params = "", list[Any]([now, *self._claim_params(), now])
        if exclude_targets:
            where += f" AND target NOT IN ({', '.join('?' * len(exclude_targets))})"
            params += exclude_targets
        if target is not None:
            where += " AND target = ?"
            params.append(target)
        if ops:
            where += f" AND op IN ({', '.join('?' * len(ops))})"
            params += ops
        with self._tx() as c:
            rows = c.execute(
                f"UPDATE ops SET status = 'inflight', updated_at = ?{self._CLAIM_SET}"
                " WHERE seq IN (SELECT seq FROM ops INDEXED BY ops_ready"
                " WHERE status = 'pending' AND head = 1 AND next_attempt_at <= ?"
                f"{where} ORDER BY seq LIMIT ?) RETURNING {COLUMNS}",
                (*params, limit),
            ).fetchall()
        return sorted((row_to_op(r) for r in rows), key=lambda op: op.seq)

    def complete(self, results: Sequence[OpResult]) -> None:
        if not results:
            return
        with self._tx() as c:
            for r in results:
                found = c.execute(
                    "SELECT target, uid, chain FROM ops WHERE seq = ?", (r.seq,)
                ).fetchone()
                if found is None:  # discarded by an operator meanwhile
                    continue
                target, uid, chain = found
                if r.outcome in ("delivered", "skipped"):
                    c.execute(
                        "UPDATE ops SET status = ?, head = 0, attempts = ?, updated_at = ?,"
                        " last_error = ?, http_status = ?, response = ? WHERE seq = ?",
                        (
                            r.outcome,
                            r.attempts,
                            r.now,
                            r.error if r.outcome == "skipped" else None,
                            r.http_status,
                            encode_response(r.response) if chain is not None else None,
                            r.seq,
                        ),
                    )
                    c.execute(PROMOTE, (target, uid))
                    if r.remote_id is not None:
                        self._upsert_remote_id(c, target, uid, r.remote_id)
                elif r.outcome == "retry":
                    c.execute(
                        "UPDATE ops SET status = 'pending', attempts = ?, next_attempt_at = ?,"
                        " updated_at = ?, last_error = ?, http_status = ? WHERE seq = ?",
                        (r.attempts, r.next_attempt_at, r.now, r.error, r.http_status, r.seq),
                    )
                else:
                    c.execute(
                        "UPDATE ops SET status = 'dead', attempts = ?, updated_at = ?,"
                        " last_error = ?, http_status = ?, response = ? WHERE seq = ?",
                        (
                            r.attempts,
                            r.now,
                            r.error,
                            r.http_status,
                            encode_response(r.response) if chain is not None else None,
                            r.seq,
                        ),
                    )
                    c.execute(
                        "UPDATE ops SET status = 'parked', updated_at = ? WHERE target = ?"
                        " AND uid = ? AND status = 'pending' AND seq > ?",
                        (r.now, target, uid, r.seq),
                    )
                if chain is not None and r.outcome != "retry":
                    advance_chain(c, chain, r.now)

    def chain_steps(self, chain: str) -> dict[str, StepResult]:
        rows = self._read(
            "SELECT step_id, status, http_status, response FROM ops INDEXED BY ops_chain"
            " WHERE chain = ? AND step_id IS NOT NULL"
            " AND status IN ('delivered', 'dead', 'skipped') ORDER BY seq",
            (chain,),
        )
        return {
            step_id: StepResult(
                ok=status == "delivered",
                status=http_status,
                response=None if response is None else json.loads(response),
            )
            for step_id, status, http_status, response in rows
        }

    def reset_inflight(self) -> int:
        with self._tx() as c:
            count: int = c.execute(
                "UPDATE ops SET status = 'pending' WHERE status = 'inflight'"
            ).rowcount
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
        value = self._scalar(
            "SELECT MIN(next_attempt_at) FROM ops INDEXED BY ops_ready_due"
            " WHERE status = 'pending' AND head = 1"
        )
        return None if value is None else float(value)

    # -- operator side -------------------------------------------------------------------------

    def get(self, op_id: str) -> StoredOp | None:
        rows = self._read(f"SELECT {COLUMNS} FROM ops WHERE op_id = ?", (op_id,))
        return row_to_op(rows[0]) if rows else None

    def list(self, status: Status | None = None, limit: int = 100) -> list[StoredOp]:
        """Newest first."""
        if status is None:
            rows = self._read(f"SELECT {COLUMNS} FROM ops ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                f"SELECT {COLUMNS} FROM ops WHERE status = ? ORDER BY seq DESC LIMIT ?",
                (status, limit),
            )
        return [row_to_op(r) for r in rows]

    def retry(self, op_id: str, now: float) -> bool:
        with self._tx() as c:
            row = c.execute(
                "SELECT target, uid FROM ops WHERE op_id = ? AND status IN ('dead', 'parked')",
                (op_id,),
            ).fetchone()
            if row is None:
                return False
            c.execute(
                "UPDATE ops SET status = 'pending', attempts = 0, next_attempt_at = ?,"
                " updated_at = ? WHERE op_id = ?",
                (now, now, op_id),
            )
            self._unpark(c, row[0], row[1], now)
        return True

    @staticmethod
    def _unpark(c: Executor, target: str, uid: str, now: float) -> None:
        """Parked ops of a task go back to pending, up to its next dead op (if any)."""
        next_dead = c.execute(
            "SELECT MIN(seq) FROM ops WHERE target = ? AND uid = ?"
            " AND status IN ('dead', 'parked') AND status = 'dead'",
            (target, uid),
        ).fetchone()[0]
        c.execute(
            "UPDATE ops SET status = 'pending', next_attempt_at = ?, updated_at = ?"
            " WHERE target = ? AND uid = ? AND status IN ('dead', 'parked')"
            " AND status = 'parked' AND seq < ?",
            (now, now, target, uid, next_dead if next_dead is not None else 2**62),
        )

    def retry_dead(self, now: float) -> int:
        """Every dead and parked op -> pending now, attempts reset. Returns how many."""
        with self._tx() as c:
            count: int = c.execute(
                "UPDATE ops SET status = 'pending', attempts = 0, next_attempt_at = ?,"
                " updated_at = ? WHERE status IN ('dead', 'parked')",
                (now, now),
            ).rowcount
        return count

    def discard(self, op_id: str) -> bool:
        with self._tx() as c:
            row = c.execute(
                "SELECT target, uid, status, chain FROM ops"
                " WHERE op_id = ? AND status IN ('pending', 'dead', 'parked', 'waiting')",
                (op_id,),
            ).fetchone()
            if row is None:
                return False
            target, uid, status, chain = row
            c.execute("DELETE FROM ops WHERE op_id = ?", (op_id,))
            now = time.time()
            if status == "dead":
                self._unpark(c, target, uid, now)
            c.execute(PROMOTE, (target, uid))
            if chain is not None:
                advance_chain(c, chain, now)  # the operator gave up on this step: go on
        return True

    def purge(self, statuses: Sequence[Status], older_than: float) -> int:
        unknown = set(statuses) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown statuses {sorted(unknown)}")
        if not statuses:
            return 0
        with self._tx() as c:
            purged: int = c.execute(
                f"DELETE FROM ops WHERE status IN ({', '.join('?' * len(statuses))})"
                " AND updated_at < ?",
                (*statuses, older_than),
            ).rowcount
            if purged and set(statuses) != {"delivered"}:
                self._repair_open(c)
        return purged

    @staticmethod
    def _repair_open(c: Executor) -> None:
        """After open ops were deleted: unpark ops no longer behind a dead op, mark heads."""
        c.execute(
            "UPDATE ops SET status = 'pending', next_attempt_at = updated_at"
            " WHERE status IN ('dead', 'parked') AND status = 'parked' AND NOT EXISTS ("
            " SELECT 1 FROM ops d WHERE d.target = ops.target AND d.uid = ops.uid"
            " AND d.status IN ('dead', 'parked') AND d.status = 'dead' AND d.seq < ops.seq)"
        )
        c.execute(
            "UPDATE ops SET head = 1 WHERE head = 0 AND status NOT IN ('delivered', 'skipped')"
            " AND seq = (SELECT MIN(seq) FROM ops o WHERE o.target = ops.target"
            " AND o.uid = ops.uid AND o.status NOT IN ('delivered', 'skipped'))"
        )

    def counts(self) -> dict[str, int]:
        """Ops per status; every status is a key, 0 included."""
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for status, n in self._read("SELECT status, count(*) FROM ops GROUP BY status"):
            out[status] = n
        return out

    def oldest_pending_created_at(self) -> float | None:
        """created_at of the oldest pending or inflight op (by seq: source order)."""
        value = self._scalar(
            "SELECT MIN(created_at) FROM ("
            " SELECT created_at FROM (SELECT created_at FROM ops WHERE status = 'pending'"
            "  ORDER BY seq LIMIT 1) AS p"
            " UNION ALL"
            " SELECT created_at FROM (SELECT created_at FROM ops WHERE status = 'inflight'"
            "  ORDER BY seq LIMIT 1) AS i) AS oldest"
        )
        return None if value is None else float(value)

    def get_remote_id(self, target: str, uid: str) -> str | None:
        value = self._scalar(
            "SELECT remote_id FROM task_map WHERE target = ? AND uid = ?", (target, uid)
        )
        return None if value is None else str(value)

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None:
        with self._tx() as c:
            self._upsert_remote_id(c, target, uid, remote_id)

    @staticmethod
    def _upsert_remote_id(c: Executor, target: str, uid: str, remote_id: str) -> None:
        c.execute(
            "INSERT INTO task_map (target, uid, remote_id) VALUES (?, ?, ?)"
            " ON CONFLICT (target, uid) DO UPDATE SET remote_id = excluded.remote_id",
            (target, uid, remote_id),
        )

    def get_state(self, key: str) -> str | None:
        value = self._scalar("SELECT value FROM state WHERE key = ?", (key,))
        return None if value is None else str(value)

    def set_state(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
