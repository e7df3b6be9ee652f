"""SQLite outbox: operations and the source checkpoint committed in one transaction.

Durability: WAL mode with `synchronous=NORMAL`. The guarantee is "ops + checkpoint survive a
kill -9 of the process": a committed transaction is in the WAL file, which the OS keeps after
the process dies. On power loss the last commits may be lost; the source then replays them
(the checkpoint is committed with its ops, so the two never disagree). `synchronous=FULL`
(URL option `?synchronous=full`) also survives power loss at some throughput cost.

The statements (`statements.py`, in the SQLite dialect) and their bookkeeping (`shared.py`) are
shared with the Postgres outbox.

One instance per thread (ingest, delivery, CLI each open their own); `busy_timeout` lets
them wait for each other's short write transactions.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

from task_bridge.errors import OutboxError, OutboxUnavailable
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.operations import Operation
from task_bridge.outbox.rows import (
    ROW_FIELDS,
    checked_payload,
    encode_op,
    op_row,
    stored_payload,
)
from task_bridge.outbox.shared import Executor, SqlOutbox
from task_bridge.outbox.sqlite_schema import (
    BUSY_TIMEOUT_MS,
    MIGRATE_V1,
    PER_ROW_ALWAYS,
    PRAGMAS,
    SCHEMA,
    SCHEMA_VERSION,
    insert_batch,
)
from task_bridge.outbox.statements import SQLITE, Statements

__all__ = ["BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "SqliteOutbox", "dumps_payload"]

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
CHECKPOINT_INTERVAL_S = 1.0


def _batch(rows: list[list[Any]]) -> tuple[str, dict[str, Any]]:
    """Fields with one value in every row are bound once; rows keep the others."""
    params: dict[str, Any] = {}
    per_row: list[int] = []
    for k, name in enumerate(ROW_FIELDS):
        values = set(map(itemgetter(k), rows)) if name not in PER_ROW_ALWAYS else ()
        if len(values) == 1:
            params[name] = next(iter(values))
        else:
            per_row.append(k)
    params["rows"] = dumps_payload(list(map(itemgetter(*per_row), rows)))
    return insert_batch(tuple(ROW_FIELDS[k] for k in per_row)), params


# Primary result codes that mean the file cannot take writes now.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,  # locked by another process beyond busy_timeout
        sqlite3.SQLITE_IOERR,  # e.g. the file-size limit (ulimit -f), a failing disk
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)


def _error(context: str, exc: sqlite3.Error) -> OutboxError:
    """`OutboxUnavailable` (exit 2: the operator fixes the disk, a supervisor restarts the
    bridge) when the file cannot take writes; `OutboxError` for anything else."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the extended code's primary part
    kind = OutboxUnavailable if code in _UNAVAILABLE else OutboxError
    return kind(f"{context}: {exc}")


MAX_STATEMENT_CHARS = 64 * 1024 * 1024
"""A batch whose rows' JSON is longer than this is inserted op by op: SQLite refuses a string
over `SQLITE_LIMIT_LENGTH` (10**9 bytes by default) as "string or blob too big", and a batch
of big payloads would otherwise fail whole, every time it is read again."""


class SqliteOutbox(SqlOutbox):
    """`task_bridge.outbox.base.Outbox` on one SQLite file (or `:memory:` for tests)."""

    sql = Statements(SQLITE)

    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        write_lock: threading.Lock | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        """`write_lock`: shared by the instances of one process (ingest, delivery), so their
        write transactions queue on it instead of on SQLite's busy handler, which sleeps in
        growing steps (up to 100 ms) and showed up as latency spikes.
        `checkpoint_interval`: least time between two checkpoints by `maintain`."""
        self._write_lock = write_lock or threading.Lock()
        self._tx_thread: int | None = None  # the thread inside `_tx`, if any
        self._checkpoint_interval = checkpoint_interval
        self._next_checkpoint = 0.0
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
            if self._schema_version(c, SCHEMA_VERSION, self.path) == 1:
                for statement in MIGRATE_V1:
                    c.execute(statement)
            self._create(c, SCHEMA, SCHEMA_VERSION)

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE); sqlite errors become OutboxError. Inside
        `transaction()` on the same thread, part of that one; from another thread, an error."""
        if self._joins():
            yield self._conn
            return
        with self._write_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _error(f"outbox {self.path}: cannot start a transaction", exc) from exc
            self._tx_thread = threading.get_ident()
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _error(f"outbox {self.path}", exc) from exc
            except BaseException:
                self._rollback()
                raise
            finally:
                self._tx_thread = None

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _encode(self, ops: Sequence[Operation], now: float) -> list[tuple[str, dict[str, Any]]]:
        """The batch as `insert_batch` statements and parameters: one statement, payloads
        inline (one encoding pass); when a payload cannot be encoded, again op by op so only
        that op goes dead. A batch too big for one statement goes op by op, every field bound
        by name (big payloads: no JSON for SQLite to parse again)."""
        try:
            batch = _batch([op_row(op, now, stored_payload(op), op.error) for op in ops])
        except PayloadError:
            batch = _batch([op_row(op, now, *checked_payload(op)) for op in ops])
        if len(batch[1]["rows"]) <= MAX_STATEMENT_CHARS:
            return [batch]
        one_by_one = insert_batch(())
        return [
            (one_by_one, {**dict(zip(ROW_FIELDS, encode_op(op, now), strict=True)), "rows": "[0]"})
            for op in ops
        ]

    def _insert(self, c: Executor, encoded: list[tuple[str, dict[str, Any]]]) -> int:
        before = self._conn.total_changes  # `c` is this connection
        for statement in encoded:
            self._conn.execute(*statement)
        return self._conn.total_changes - before

    def maintain(self) -> None:
        """Checkpoint the WAL into the database file, and let the next write start it over.

        SQLite only rewinds the WAL when a write begins with every frame already copied. A
        checkpoint alone never got there: delivery commits while it copies, so the WAL grew
        until the autocheckpoint backstop (~200 MB in 14 s at 2k changes/s), and the commit
        that rewound it then truncated it (`journal_size_limit`), holding the write lock for
        ~60 ms. So: copy the bulk off the write lock (PASSIVE never blocks writers), then the
        few frames committed meanwhile under it, where no commit can slip in between.
        """
        if time.monotonic() < self._next_checkpoint or self._tx_thread is not None:
            return  # not from inside a transaction: the write lock is not reentrant
        self._next_checkpoint = time.monotonic() + self._checkpoint_interval
        self._read("PRAGMA wal_checkpoint(PASSIVE)")
        with self._write_lock:
            self._read("PRAGMA wal_checkpoint(PASSIVE)")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._joins()  # raises if another thread's transaction is open
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _error(f"outbox {self.path}", exc) from exc

    def close(self) -> None:
        self._conn.close()
