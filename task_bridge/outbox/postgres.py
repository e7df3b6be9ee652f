"""Postgres outbox: one outbox several bridges share (Kafka consumer-group scale-out).

`outbox.url: postgresql://user:pass@host/db?schema=task_bridge`: the tables live in their own
schema (default `task_bridge`, created when missing); other query options go to libpq.

With one shared outbox, a bridge taking over a dead one's partitions re-reads records the
dead one stored but had not yet committed to Kafka, and inserts nothing new (insert-or-ignore
on the op id, G2), and it delivers what the dead one left undelivered.

- **One writer at a time.** Every write transaction first takes a transaction-level advisory
  lock on the outbox, so writes from every bridge and thread run one after another, as
  SQLite's do. The shared statements (`statements.py`, in the Postgres dialect) keep their
  meaning: a task's head is decided against everything committed, and `seq` order is commit
  order.
- **Claims name their claimer.** A claiming connection holds a session advisory lock on a key
  of its own for its lifetime and stores that key in `claimed_by`. When a process dies, its
  connection closes and Postgres frees the lock: inflight ops whose claimer's lock can be taken
  are orphans and go back to pending (`reclaim_orphans`, which every bridge runs every few
  seconds): a surviving bridge takes over a dead one's in-flight work. An op the dead bridge
  had sent but not yet recorded is sent again: at-least-once across a crash, exactly as with
  SQLite; creates stay single through the targets' idempotent forms (G3).
- **A taken-over op waits out its old claimer's request.** The claimer whose lock is free may
  be a bridge still running with its connection cut, a request for the op still on its way
  (a bridge stops sending when it finds its outbox gone, but what it has sent stays sent).
  Sent again at once, the op and the task's next ones could reach the API before that old
  request, which would then undo them (G4). So a reclaimed op is not due before
  `takeover_hold` seconds have passed (the app gives the longest request timeout and a
  margin): by then its old sender has had its answer or given up on it.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from task_bridge.errors import ConfigError, OutboxError, OutboxUnavailable
from task_bridge.outbox.base import StoredOp
from task_bridge.outbox.shared import Executor, SqlOutbox
from task_bridge.outbox.statements import (
    INDEXES,
    IS_BLOCKING,
    IS_OPEN,
    POSTGRES,
    SIDE_TABLES,
    Statements,
)

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "task_bridge"
CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "task-bridge-outbox"  # in pg_stat_activity

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

TABLES = (
    """CREATE TABLE IF NOT EXISTS ops (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        op_id           TEXT NOT NULL UNIQUE,
        target          TEXT NOT NULL,
        uid             TEXT NOT NULL,
        op              TEXT NOT NULL,
        rule            TEXT NOT NULL,
        action_index    INTEGER NOT NULL,
        position        TEXT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL,
        head            INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        updated_at      DOUBLE PRECISION NOT NULL,
        last_error      TEXT,
        http_status     INTEGER,
        chain           TEXT,
        step_id         TEXT,
        on_error        TEXT,
        response        TEXT,
        claimed_by      INTEGER)""",
    *INDEXES,
    *SIDE_TABLES,
)

# SQLite's INSERT (sqlite_schema.py) with each parameter bound once, in `rows.encode_op`'s order.
INSERT = f"""
WITH v (op_id, target, uid, op, rule, action_index, position, payload, now, error, chain,
        step_id, on_error) AS (
    VALUES (%s::text, %s::text, %s::text, %s::text, %s::text, %s::int, %s::text, %s::text,
            %s::float8, %s::text, %s::text, %s::text, %s::text))
INSERT INTO ops (op_id, target, uid, op, rule, action_index, position, payload, status, head,
    attempts, next_attempt_at, created_at, updated_at, last_error, chain, step_id, on_error)
SELECT v.op_id, v.target, v.uid, v.op, v.rule, v.action_index, v.position, v.payload,
    CASE WHEN v.error IS NOT NULL THEN 'dead'
         WHEN v.chain IS NOT NULL THEN 'waiting'
         WHEN EXISTS (SELECT 1 FROM ops b WHERE b.target = v.target AND b.uid = v.uid
                      AND b.{IS_BLOCKING}) THEN 'parked'
         ELSE 'pending' END,
    CASE WHEN EXISTS (SELECT 1 FROM ops o WHERE o.target = v.target AND o.uid = v.uid
                      AND o.{IS_OPEN}) THEN 0 ELSE 1 END,
    0, v.now, v.now, v.now, v.error, v.chain, v.step_id, v.on_error
FROM v
ON CONFLICT (op_id) DO NOTHING
"""


_RECLAIMED = (
    "status = 'pending', claimed_by = NULL, next_attempt_at = GREATEST(next_attempt_at, %s::float8)"
)
"""A dead claimer's op back to pending, due no earlier than the parameter."""


def _key32(text: str) -> int:
    """A stable signed 32-bit advisory-lock key for `text`."""
    value = zlib.crc32(text.encode())
    return value - 2**32 if value >= 2**31 else value


def parse_url(url: str) -> tuple[str, str]:
    """(libpq connection URL, schema) from `postgresql://...[?schema=name]`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    rest = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"outbox.url: schema {schema!r} is not a plain lower-case name"
            " (letters, digits, underscores)"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _Cursor:
    """A psycopg cursor as an `Executor` (statements without parameters go without any)."""

    __slots__ = ("cur",)

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur

    def execute(self, statement: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.cur.execute(statement, parameters or None)


class PostgresOutbox(SqlOutbox):
    """`task_bridge.outbox.base.Outbox` in a schema of a Postgres database (see the module doc)."""

    sql = Statements(POSTGRES, claim_set=f", claimed_by = {POSTGRES.param}")

    def __init__(self, url: str, takeover_hold: float = 0.0) -> None:
        """`takeover_hold`: seconds a dead claimer's ops wait before they are due again."""
        self.dsn, self.schema = parse_url(url)
        self.takeover_hold = takeover_hold
        self.where = f"{redact(self.dsn)} (schema {self.schema})"
        self._write_key = _key32(f"task-bridge:{self.schema}:writes")
        self._claimer_class = _key32(f"task-bridge:{self.schema}:claimers")
        self._claimer: int | None = None  # our claimer key, once we hold its lock
        self._tx_thread: int | None = None
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            raise OutboxUnavailable(f"cannot open outbox {self.where}: {exc}") from exc
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            ).fetchone()
            if exists is None:  # (a role without CREATE on the database may use a given schema)
                # another bridge may create it this instant: IF NOT EXISTS takes no lock
                with contextlib.suppress(
                    psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema
                ):
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            # G1 rests on the outbox commit being durable before the source is acknowledged:
            # with the server's or role's synchronous_commit=off a crash could lose a commit
            # whose source position the slot has already stored
            conn.execute("SET synchronous_commit TO on")
        except psycopg.Error as exc:
            conn.close()
            raise OutboxError(f"outbox {self.where}: {exc}") from exc
        return conn

    def _migrate(self) -> None:
        with self._tx() as c:
            self._schema_version(c, SCHEMA_VERSION, self.where)
            self._create(c, TABLES, SCHEMA_VERSION)

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Executor]:
        if self._joins():
            yield _Cursor(self._conn.cursor())
            return
        try:
            with self._conn.transaction():
                self._tx_thread = threading.get_ident()
                try:
                    c = _Cursor(self._conn.cursor())
                    c.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (self._write_key,))
                    yield c
                finally:
                    self._tx_thread = None
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        self._joins()  # raises if another thread's transaction is open
        try:
            return self._conn.execute(statement, params or None).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: psycopg.Error) -> OutboxError:
        """A lost connection is `OutboxUnavailable` (exit 2; the bridge does not reconnect
        to its outbox, a supervisor restarts it); any other failure is `OutboxError`."""
        kind = OutboxUnavailable if self._conn.broken else OutboxError
        return kind(f"outbox {self.where}: {exc}")

    def _insert(self, c: Executor, encoded: list[tuple[Any, ...]]) -> int:
        assert isinstance(c, _Cursor)
        c.cur.executemany(INSERT, encoded)
        return c.cur.rowcount

    def close(self) -> None:
        self._conn.close()

    # -- claimers ------------------------------------------------------------------------------

    def _claim_params(self) -> tuple[Any, ...]:
        return (self._claimer,)

    def claim_due(
        self,
        now: float,
        limit: int,
        exclude_targets: Sequence[str] = (),
        *,
        target: str | None = None,
        ops: Sequence[str] = (),
    ) -> list[StoredOp]:
        if self._claimer is None:
            self._take_claimer_key()
        return super().claim_due(now, limit, exclude_targets, target=target, ops=ops)

    def _take_claimer_key(self) -> None:
        """Hold a session lock on a claimer key of our own; ops a dead process claimed under
        the same key go back to pending first (we hold the lock, so it is gone)."""
        rng = random.SystemRandom()
        while True:
            key = rng.randrange(-(2**31), 2**31)
            got = self._read(
                "SELECT pg_try_advisory_lock(%s::int, %s::int)", (self._claimer_class, key)
            )
            if got[0][0]:
                break
        with self._tx() as c:
            c.execute(
                f"UPDATE ops SET {_RECLAIMED} WHERE status = 'inflight' AND claimed_by = %s",
                (self._not_before(), key),
            )
        self._claimer = key

    def _not_before(self) -> float:
        """When ops taken over from a dead claimer are due at the earliest (without a hold:
        when they were due)."""
        return time.time() + self.takeover_hold if self.takeover_hold > 0 else 0.0

    def reset_inflight(self) -> int:
        """Crash recovery: only the inflight ops of dead claimers; other bridges are alive."""
        return self.reclaim_orphans()

    def reclaim_orphans(self) -> int:
        """Inflight ops of dead claimers (their lock is free) -> pending. Returns how many."""
        with self._tx() as c:
            claimers = c.execute(
                "SELECT DISTINCT claimed_by FROM ops WHERE status = 'inflight'"
                " AND claimed_by IS DISTINCT FROM %s",
                (self._claimer,),
            ).fetchall()
            dead = [
                key
                for (key,) in claimers
                if key is None
                or c.execute(
                    "SELECT pg_try_advisory_xact_lock(%s::int, %s::int)", (self._claimer_class, key)
                ).fetchone()[0]
            ]
            if not dead:
                return 0
            count: int = c.execute(
                f"UPDATE ops SET {_RECLAIMED} WHERE status = 'inflight'"
                " AND (claimed_by = ANY(%s::int[]) OR claimed_by IS NULL)",
                (self._not_before(), [key for key in dead if key is not None]),
            ).rowcount
        return count
