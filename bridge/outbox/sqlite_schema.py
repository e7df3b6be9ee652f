"""The SQLite outbox's tables, statements and chain bookkeeping (see `sqlite.py`)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from bridge.jsonenc import PayloadError, dumps_payload

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000

# Connection tuning for batches of ~1000 ops: the op_id index is random-ordered, so a batch
# dirties about one index page per op; a larger cache and rarer WAL checkpoints keep that cheap.
PRAGMAS = (
    f"busy_timeout = {BUSY_TIMEOUT_MS}",
    "journal_mode = WAL",
    "cache_size = -16384",  # 16 MiB per connection: two connections stay well inside G6
    "wal_autocheckpoint = 10000",
    "journal_size_limit = 67108864",
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ops (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
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
        next_attempt_at REAL NOT NULL,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        last_error      TEXT,
        http_status     INTEGER,
        chain           TEXT,
        step_id         TEXT,
        on_error        TEXT,
        response        TEXT)""",
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
    """CREATE TABLE IF NOT EXISTS checkpoints (
        source      TEXT PRIMARY KEY,
        position    TEXT NOT NULL,
        updated_at  REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS task_map (
        target      TEXT NOT NULL,
        uid         TEXT NOT NULL,
        remote_id   TEXT NOT NULL,
        PRIMARY KEY (target, uid))""",
    """CREATE TABLE IF NOT EXISTS state (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL)""",
)

# v1 -> v2: chains (new columns), `skipped` ends a task's op like `delivered` does.
MIGRATE_V1 = (
    "ALTER TABLE ops ADD COLUMN chain TEXT",
    "ALTER TABLE ops ADD COLUMN step_id TEXT",
    "ALTER TABLE ops ADD COLUMN on_error TEXT",
    "ALTER TABLE ops ADD COLUMN response TEXT",
    "DROP INDEX IF EXISTS ops_open",
)
RESPONSE_MAX_CHARS = 65536

COLUMNS = (
    "seq, op_id, target, uid, op, rule, action_index, position, payload, status, attempts,"
    " next_attempt_at, created_at, updated_at, last_error, http_status, chain, step_id"
)

# One row per op; the status and head flag are computed against what is already stored,
# including earlier rows of the same batch (executemany runs the rows in order).
# Numbered parameters, bound from a tuple in `sqlite._encode`'s order.
INSERT = """
INSERT OR IGNORE INTO ops (op_id, target, uid, op, rule, action_index, position, payload,
    status, head, attempts, next_attempt_at, created_at, updated_at, last_error, chain, step_id,
    on_error)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
    CASE WHEN ?10 IS NOT NULL THEN 'dead'
         WHEN ?11 IS NOT NULL THEN 'waiting'
         WHEN EXISTS (SELECT 1 FROM ops b WHERE b.target = ?2 AND b.uid = ?3
                      AND b.status IN ('dead', 'parked')) THEN 'parked'
         ELSE 'pending' END,
    NOT EXISTS (SELECT 1 FROM ops o WHERE o.target = ?2 AND o.uid = ?3
                AND o.status NOT IN ('delivered', 'skipped')),
    0, ?9, ?9, ?9, ?10, ?11, ?12, ?13
"""

PROMOTE = """
UPDATE ops SET head = 1 WHERE head = 0 AND seq = (
    SELECT MIN(seq) FROM ops WHERE target = ? AND uid = ?
    AND status NOT IN ('delivered', 'skipped'))
"""


def encode_response(value: Any) -> str | None:
    """A step's response as stored (JSON, bounded); too big -> a note instead of the body."""
    if value is None:
        return None
    try:
        text = dumps_payload(value)
    except PayloadError:
        text = json.dumps(repr(value))
    if len(text) > RESPONSE_MAX_CHARS:
        return json.dumps({"_truncated": f"response of {len(text)} characters not kept"})
    return text


def advance_chain(c: sqlite3.Connection, chain: str, now: float) -> None:
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
