"""SQLite outbox: operations and the source checkpoint committed in one transaction.

Durability: WAL mode with `synchronous=NORMAL`. The guarantee is "ops + checkpoint survive a
kill -9 of the process": a committed transaction is in the WAL file, which the OS keeps after
the process dies. On power loss the last commits may be lost; the source then replays them
(the checkpoint is committed with its ops, so the two never disagree). `synchronous=FULL`
(URL option `?synchronous=full`) also survives power loss at some throughput cost.

Per-task order (G4): `head = 1` marks the earliest open (not delivered) op of each
(target, uid). Only pending heads are claimed, so claiming and `next_due_at` are index
range reads however large the backlog is. Every statement that removes an op from the open
set (delivered, discarded, purged) promotes the next op of its task.

One instance per thread (ingest, delivery, CLI each open their own); `busy_timeout` lets
them wait for each other's short write transactions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.errors import OutboxError
from bridge.jsonenc import PayloadError, dumps_payload
from bridge.operations import Operation, StepResult
from bridge.outbox.base import STATUSES, OpResult, Status, StoredOp
from bridge.outbox.sqlite_schema import (
    BUSY_TIMEOUT_MS,
    COLUMNS,
    INSERT,
    MIGRATE_V1,
    PRAGMAS,
    PROMOTE,
    SCHEMA,
    SCHEMA_VERSION,
    advance_chain,
    encode_response,
)

__all__ = ["BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "SqliteOutbox", "dumps_payload"]

SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def _row_to_op(row: sqlite3.Row | tuple[Any, ...]) -> StoredOp:
    return StoredOp(
        seq=row[0],
        op_id=row[1],
        target=row[2],
        uid=row[3],
        op=row[4],
        rule=row[5],
        action_index=row[6],
        position=row[7],
        payload=json.loads(row[8]),
        status=row[9],
        attempts=row[10],
        next_attempt_at=row[11],
        created_at=row[12],
        updated_at=row[13],
        last_error=row[14],
        http_status=row[15],
        chain=row[16],
        step_id=row[17],
    )


def _encode(op: Operation, now: float) -> tuple[Any, ...]:
    """Insert parameters for one op; an unencodable payload makes the op dead, not the batch."""
    error = op.error
    try:
        payload = dumps_payload(op.payload)
    except PayloadError as exc:
        # Kept for inspection only; a redrive sends this and the API refuses it.
        payload = json.dumps({"_unencodable": repr(op.payload)})
        error = error or f"rule '{op.rule}' action {op.action_index}: payload: {exc}"
    return (  # ?1 .. ?13 of INSERT
        op.op_id,
        op.target,
        op.uid,
        op.op,
        op.rule,
        op.action_index,
        op.position.key(),
        payload,
        now,
        error,
        op.chain,
        op.step_id,
        op.on_error if op.chain is not None else None,
    )


class SqliteOutbox:
    """`bridge.outbox.base.Outbox` on one SQLite file (or `:memory:` for tests)."""

    def __init__(
        self, path: str, synchronous: str = "NORMAL", write_lock: threading.Lock | None = None
    ) -> None:
        """`write_lock`: shared by the instances of one process (ingest, delivery), so their
        write transactions queue on it instead of on SQLite's busy handler, which sleeps in
        growing steps (up to 100 ms) and showed up as latency spikes."""
        self._write_lock = write_lock or threading.Lock()
        self._tx_thread: int | None = None  # the thread inside `_tx`, if any
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        try:
            for pragma in PRAGMAS:
                self._conn.execute(f"PRAGMA {pragma}")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        with self._tx() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = c.execute("SELECT value FROM state WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row is not None else None
            if version is not None and version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {self.path} has schema version {version}, this bridge knows up to"
                    f" {SCHEMA_VERSION}: upgrade the bridge"
                )
            if version == 1:
                for statement in MIGRATE_V1:
                    c.execute(statement)
            for statement in SCHEMA:
                c.execute(statement)
            c.execute(
                "INSERT INTO state (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes this thread makes inside run as one transaction."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE); sqlite errors become OutboxError. Inside
        `transaction()` on the same thread, part of that one."""
        if self._tx_thread == threading.get_ident():
            yield self._conn
            return
        with self._write_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot start a transaction: {exc}") from exc
            self._tx_thread = threading.get_ident()
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            finally:
                self._tx_thread = None

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._read(sql, params)
        return rows[0][0] if rows else None

    # -- ingest side ---------------------------------------------------------------------------

    def put(self, ops: Sequence[Operation], source: str, checkpoint: str | None, now: float) -> int:
        rows = [_encode(op, now) for op in ops]
        with self._tx() as c:
            before = c.total_changes
            if rows:
                c.executemany(INSERT, rows)
            inserted = c.total_changes - before
            for chain in dict.fromkeys(op.chain for op in ops if op.chain is not None):
                advance_chain(c, chain, now)
            if checkpoint is not None:
                c.execute(
                    "INSERT INTO checkpoints (source, position, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (source) DO UPDATE SET position = excluded.position,"
                    " updated_at = excluded.updated_at",
                    (source, checkpoint, now),
                )
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
        where, params = "", list[Any]([now, now])
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
                "UPDATE ops SET status = 'inflight', updated_at = ? WHERE seq IN ("
                " SELECT seq FROM ops INDEXED BY ops_ready"
                " WHERE status = 'pending' AND head = 1 AND next_attempt_at <= ?"
                f"{where} ORDER BY seq LIMIT ?) RETURNING {COLUMNS}",
                (*params, limit),
            ).fetchall()
        return sorted((_row_to_op(r) for r in rows), key=lambda op: op.seq)

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
            return c.execute("UPDATE ops SET status = 'pending' WHERE status = 'inflight'").rowcount

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
        return _row_to_op(rows[0]) if rows else None

    def list(self, status: Status | None = None, limit: int = 100) -> list[StoredOp]:
        """Newest first."""
        if status is None:
            rows = self._read(f"SELECT {COLUMNS} FROM ops ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                f"SELECT {COLUMNS} FROM ops WHERE status = ? ORDER BY seq DESC LIMIT ?",
                (status, limit),
            )
        return [_row_to_op(r) for r in rows]

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
    def _unpark(c: sqlite3.Connection, target: str, uid: str, now: float) -> None:
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
            return c.execute(
                "UPDATE ops SET status = 'pending', attempts = 0, next_attempt_at = ?,"
                " updated_at = ? WHERE status IN ('dead', 'parked')",
                (now, now),
            ).rowcount

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
    def _repair_open(c: sqlite3.Connection) -> None:
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
            "  ORDER BY seq LIMIT 1)"
            " UNION ALL"
            " SELECT created_at FROM (SELECT created_at FROM ops WHERE status = 'inflight'"
            "  ORDER BY seq LIMIT 1))"
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
    def _upsert_remote_id(c: sqlite3.Connection, target: str, uid: str, remote_id: str) -> None:
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

    def close(self) -> None:
        self._conn.close()
