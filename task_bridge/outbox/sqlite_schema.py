"""The SQLite outbox's tables and insert (see `sqlite.py`; shared statements: `statements.py`)."""

from __future__ import annotations

import functools

from task_bridge.outbox.rows import ROW_FIELDS
from task_bridge.outbox.statements import INDEXES, IS_BLOCKING, IS_OPEN, SIDE_TABLES

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000

# Connection tuning for batches of ~1000 ops: the op_id index is random-ordered, so a batch
# dirties about one index page per op; a larger cache and rarer WAL checkpoints keep that cheap.
PRAGMAS = (
    f"busy_timeout = {BUSY_TIMEOUT_MS}",
    "journal_mode = WAL",
    "cache_size = -16384",  # 16 MiB per connection: two connections stay well inside G6
    # A backstop only: the ingest writer checkpoints every second (`SqliteOutbox.maintain`).
    # A checkpoint inside a commit held the in-process write lock while it copied ~40 MB, and
    # delivery stalled behind it (the p99 latency spikes).
    "wal_autocheckpoint = 50000",
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
    *INDEXES,
    *SIDE_TABLES,
)

# v1 -> v2: chains (new columns), `skipped` ends a task's op like `delivered` does.
MIGRATE_V1 = (
    "ALTER TABLE ops ADD COLUMN chain TEXT",
    "ALTER TABLE ops ADD COLUMN step_id TEXT",
    "ALTER TABLE ops ADD COLUMN on_error TEXT",
    "ALTER TABLE ops ADD COLUMN response TEXT",
    "DROP INDEX IF EXISTS ops_open",
)

# One statement per batch: the rows come in as one JSON array (of `rows.op_row` values, payloads
# inline), so SQLite inserts the whole batch in one step without the GIL; row by row
# (executemany), every row waited to take the GIL back from the thread decoding the next batch
# (a convoy that held ingest to one core). Reading a field of a row parses the row's JSON
# again, so a column with one value for the whole batch (the target, the rule, no error...) is
# bound once as `:name` instead, and rows carry the rest (`insert_batch`).
# Each row's status and head flag are decided as if the rows were inserted one by one in batch
# order: against what is stored, and against the batch's earlier new rows of the same
# (target, uid), which are all open. Rows whose op_id is stored already are skipped (a repeat
# inside the batch is the same op: OR IGNORE drops it).
PER_ROW_ALWAYS = frozenset({"op_id", "position", "payload"})

_INSERT_BATCH = f"""
WITH batch AS MATERIALIZED (
    SELECT CAST(key AS INTEGER) AS i, {{columns}}
    FROM json_each(:rows)),
fresh AS MATERIALIZED (
    SELECT * FROM batch b
    WHERE NOT EXISTS (SELECT 1 FROM ops o WHERE o.op_id = b.op_id)),
ranked AS (
    SELECT *,
        row_number() OVER task AS nth,
        min(CASE WHEN error IS NOT NULL THEN i END) OVER task AS first_dead
    FROM fresh WINDOW task AS (PARTITION BY target, uid ORDER BY i))
INSERT OR IGNORE INTO ops (op_id, target, uid, op, rule, action_index, position, payload,
    status, head, attempts, next_attempt_at, created_at, updated_at, last_error, chain, step_id,
    on_error)
SELECT op_id, target, uid, op, rule, action_index, position, payload,
    CASE WHEN error IS NOT NULL THEN 'dead'
         WHEN chain IS NOT NULL THEN 'waiting'
         WHEN first_dead < i
              OR EXISTS (SELECT 1 FROM ops b WHERE b.target = r.target AND b.uid = r.uid
                         AND b.{IS_BLOCKING}) THEN 'parked'
         ELSE 'pending' END,
    nth = 1 AND NOT EXISTS (SELECT 1 FROM ops o WHERE o.target = r.target AND o.uid = r.uid
                            AND o.{IS_OPEN}),
    0, now, now, now, error, chain, step_id, on_error
FROM ranked r ORDER BY i
"""


@functools.lru_cache(maxsize=64)
def insert_batch(per_row: tuple[str, ...]) -> str:
    """INSERT_BATCH for rows holding the fields `per_row`, in that order; the other fields
    are bound by name."""
    columns = []
    for name in ROW_FIELDS:
        if name in per_row:
            arrow = "->" if name == "payload" else "->>"  # the payload stays JSON text
            columns.append(f"value {arrow} {per_row.index(name)} AS {name}")
        else:
            columns.append(f":{name} AS {name}")
    return _INSERT_BATCH.format(columns=", ".join(columns))
