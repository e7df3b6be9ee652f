"""The outbox's SQL, rendered once per backend from a `Dialect` and the named status sets.

Statements are written once, here, in terms of the dialect (`p`: a placeholder, `hint(index)`:
SQLite's `INDEXED BY`, which Postgres has no use for) and of the status sets named in
`base.py` (`OPEN`, `BLOCKING`, ...). `Statements(dialect)` holds each statement as the backend
runs it; the few whose shape depends on a call (lists of targets, op kinds, statuses) are
rendered per shape and cached.

The `INDEXED BY` hints pin SQLite to the partial indexes below; a partial index is usable only
when the query repeats its `WHERE` terms, which is why some statements spell a predicate out
twice (`status IN BLOCKING AND status = 'dead'`): both sides come from the same constants.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from task_bridge.outbox.base import BLOCKING, CLAIMABLE, DISCARDABLE, FINISHED, TERMINAL

COLUMNS = (
    "seq, op_id, target, uid, op, rule, action_index, position, payload, status, attempts,"
    " next_attempt_at, created_at, updated_at, last_error, http_status, chain, step_id"
)
"""The columns of a `StoredOp`, in `rows.row_to_op`'s order."""


def sql_list(values: Sequence[str]) -> str:
    """`('a', 'b')`: a tuple of status names as SQL (they are our constants, never input)."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


IS_OPEN = f"status NOT IN {sql_list(FINISHED)}"
"""The op still holds its (target, uid): the earliest such op is the task's head."""
IS_BLOCKING = f"status IN {sql_list(BLOCKING)}"
"""The op parks the later ops of its (target, uid)."""
IS_READY = f"status = '{CLAIMABLE}' AND head = 1"
"""A claimable head (due when `next_attempt_at` has come)."""
IS_TERMINAL = f"status IN {sql_list(TERMINAL)}"
IS_RETRYABLE = IS_BLOCKING
IS_DISCARDABLE = f"status IN {sql_list(DISCARDABLE)}"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' SQL."""

    name: str
    param: str
    """The placeholder of a positional parameter."""
    index_hints: bool
    """Whether `INDEXED BY` exists (SQLite) or the planner is left alone (Postgres)."""

    def hint(self, index: str) -> str:
        """` INDEXED BY index` on SQLite, nothing elsewhere (goes right after a table name)."""
        return f" INDEXED BY {index}" if self.index_hints else ""

    def params(self, n: int) -> str:
        """`n` placeholders, comma-separated."""
        return ", ".join([self.param] * n)

    def upsert(self, table: str, keys: Sequence[str], values: Sequence[str]) -> str:
        """Insert a row, or update `values` of the row with the same `keys`."""
        columns = (*keys, *values)
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({self.params(len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET"
            f" {', '.join(f'{v} = excluded.{v}' for v in values)}"
        )


SQLITE = Dialect("sqlite", "?", index_hints=True)
POSTGRES = Dialect("postgres", "%s", index_hints=False)

# The indexes and the small tables, the same on both backends (each adds its `ops` table).
INDEXES = (
    # claim_due: pending heads in seq order; next_due_at: pending heads by due time.
    f"CREATE INDEX IF NOT EXISTS ops_ready ON ops (seq) WHERE {IS_READY}",
    f"CREATE INDEX IF NOT EXISTS ops_ready_due ON ops (next_attempt_at) WHERE {IS_READY}",
    # Per-(target, uid, seq) lookups among open ops; dead/parked ops per task (a tiny index).
    f"CREATE INDEX IF NOT EXISTS ops_open2 ON ops (target, uid, seq) WHERE {IS_OPEN}",
    "CREATE INDEX IF NOT EXISTS ops_chain ON ops (chain, seq) WHERE chain IS NOT NULL",
    f"CREATE INDEX IF NOT EXISTS ops_blocked ON ops (target, uid, seq) WHERE {IS_BLOCKING}",
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
CREATE_STATE = "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class Statements:
    """Every shared statement, rendered for one dialect. `claim_set`: extra assignments of a
    claim, already rendered (the Postgres outbox records the claimer)."""

    def __init__(self, d: Dialect, claim_set: str = "") -> None:
        self.dialect = d
        self._claim_set = claim_set
        p = d.param
        # -- schema
        self.schema_version = "SELECT value FROM state WHERE key = 'schema_version'"
        self.set_state = d.upsert("state", ("key",), ("value",))
        # -- head bookkeeping: after an op leaves the open set, its task's next op is head
        self.promote = (
            "UPDATE ops SET head = 1 WHERE head = 0 AND seq = ("
            f" SELECT MIN(seq) FROM ops WHERE target = {p} AND uid = {p} AND {IS_OPEN})"
        )
        # -- chains
        self.chain_ops = (
            f"SELECT seq, status, on_error, step_id, target, uid FROM ops{d.hint('ops_chain')}"
            f" WHERE chain = {p} ORDER BY seq"
        )
        self.skip_step = (
            f"UPDATE ops SET status = 'skipped', head = 0, updated_at = {p}, last_error = {p}"
            f" WHERE seq = {p}"
        )
        self.blocked_before = (
            f"SELECT 1 FROM ops{d.hint('ops_blocked')} WHERE target = {p} AND uid = {p}"
            f" AND {IS_BLOCKING} AND seq < {p} LIMIT 1"
        )
        self.start_step = (
            f"UPDATE ops SET status = {p}, next_attempt_at = {p}, updated_at = {p} WHERE seq = {p}"
        )
        self.chain_steps = (
            f"SELECT step_id, status, http_status, response FROM ops{d.hint('ops_chain')}"
            f" WHERE chain = {p} AND step_id IS NOT NULL AND {IS_TERMINAL} ORDER BY seq"
        )
        # -- checkpoints
        self.get_checkpoint = f"SELECT position FROM checkpoints WHERE source = {p}"
        self.store_checkpoint = d.upsert("checkpoints", ("source",), ("position", "updated_at"))
        # -- results
        self.find_seq = f"SELECT target, uid, chain FROM ops WHERE seq = {p}"
        self.finish = (
            f"UPDATE ops SET status = {p}, head = 0, attempts = {p}, updated_at = {p},"
            f" last_error = {p}, http_status = {p}, response = {p} WHERE seq = {p}"
        )
        self.retry_later = (
            f"UPDATE ops SET status = '{CLAIMABLE}', attempts = {p}, next_attempt_at = {p},"
            f" updated_at = {p}, last_error = {p}, http_status = {p} WHERE seq = {p}"
        )
        self.kill = (
            f"UPDATE ops SET status = 'dead', attempts = {p}, updated_at = {p},"
            f" last_error = {p}, http_status = {p}, response = {p} WHERE seq = {p}"
        )
        self.park_later = (
            f"UPDATE ops SET status = 'parked', updated_at = {p} WHERE target = {p}"
            f" AND uid = {p} AND status = '{CLAIMABLE}' AND seq > {p}"
        )
        self.reset_inflight = f"UPDATE ops SET status = '{CLAIMABLE}' WHERE status = 'inflight'"
        self.next_due_at = (
            f"SELECT MIN(next_attempt_at) FROM ops{d.hint('ops_ready_due')} WHERE {IS_READY}"
        )
        # -- operator
        self.get = f"SELECT {COLUMNS} FROM ops WHERE op_id = {p}"
        self.list_all = f"SELECT {COLUMNS} FROM ops ORDER BY seq DESC LIMIT {p}"
        self.list_status = (
            f"SELECT {COLUMNS} FROM ops WHERE status = {p} ORDER BY seq DESC LIMIT {p}"
        )
        self.find_retryable = f"SELECT target, uid FROM ops WHERE op_id = {p} AND {IS_RETRYABLE}"
        self.requeue = (
            f"UPDATE ops SET status = '{CLAIMABLE}', attempts = 0, next_attempt_at = {p},"
            f" updated_at = {p} WHERE op_id = {p}"
        )
        self.next_dead = (
            f"SELECT MIN(seq) FROM ops WHERE target = {p} AND uid = {p}"
            f" AND {IS_BLOCKING} AND status = 'dead'"
        )
        self.unpark = (
            f"UPDATE ops SET status = '{CLAIMABLE}', next_attempt_at = {p}, updated_at = {p}"
            f" WHERE target = {p} AND uid = {p} AND {IS_BLOCKING}"
            f" AND status = 'parked' AND seq < {p}"
        )
        self.requeue_all = (
            f"UPDATE ops SET status = '{CLAIMABLE}', attempts = 0, next_attempt_at = {p},"
            f" updated_at = {p} WHERE {IS_RETRYABLE}"
        )
        self.find_discardable = (
            f"SELECT target, uid, status, chain FROM ops WHERE op_id = {p} AND {IS_DISCARDABLE}"
        )
        self.delete = f"DELETE FROM ops WHERE op_id = {p}"
        # after open ops were deleted: unpark ops no longer behind a dead op, mark heads
        self.unpark_free = (
            f"UPDATE ops SET status = '{CLAIMABLE}', next_attempt_at = updated_at"
            f" WHERE {IS_BLOCKING} AND status = 'parked' AND NOT EXISTS ("
            " SELECT 1 FROM ops d WHERE d.target = ops.target AND d.uid = ops.uid"
            f" AND d.{IS_BLOCKING} AND d.status = 'dead' AND d.seq < ops.seq)"
        )
        self.mark_heads = (
            f"UPDATE ops SET head = 1 WHERE head = 0 AND {IS_OPEN}"
            " AND seq = (SELECT MIN(seq) FROM ops o WHERE o.target = ops.target"
            f" AND o.uid = ops.uid AND o.{IS_OPEN})"
        )
        self.counts = "SELECT status, count(*) FROM ops GROUP BY status"
        self.oldest_open_created_at = (
            "SELECT MIN(created_at) FROM ("
            " SELECT created_at FROM (SELECT created_at FROM ops"
            f" WHERE status = '{CLAIMABLE}' ORDER BY seq LIMIT 1) AS p"
            " UNION ALL"
            " SELECT created_at FROM (SELECT created_at FROM ops WHERE status = 'inflight'"
            " ORDER BY seq LIMIT 1) AS i) AS oldest"
        )
        # -- target store
        self.get_remote_id = f"SELECT remote_id FROM task_map WHERE target = {p} AND uid = {p}"
        self.set_remote_id = d.upsert("task_map", ("target", "uid"), ("remote_id",))
        self.get_state = f"SELECT value FROM state WHERE key = {p}"

    def claim(self, excluded: int, by_target: bool, kinds: int) -> str:
        """Claim due ready heads, oldest first. Parameters: now, the claim_set's, now, then
        `excluded` targets, the target (if `by_target`), `kinds` op kinds, and the limit."""
        return _claim(self.dialect, self._claim_set, excluded, by_target, kinds)

    def purge(self, statuses: int) -> str:
        """Delete ops in `statuses` given statuses updated before a time (the last parameter)."""
        return _purge(self.dialect, statuses)


@functools.lru_cache(maxsize=64)
def _claim(d: Dialect, claim_set: str, excluded: int, by_target: bool, kinds: int) -> str:
    p = d.param
    where = ""
    if excluded:
        where += f" AND target NOT IN ({d.params(excluded)})"
    if by_target:
        where += f" AND target = {p}"
    if kinds:
        where += f" AND op IN ({d.params(kinds)})"
    return (
        f"UPDATE ops SET status = 'inflight', updated_at = {p}{claim_set}"
        f" WHERE seq IN (SELECT seq FROM ops{d.hint('ops_ready')}"
        f" WHERE {IS_READY} AND next_attempt_at <= {p}{where}"
        f" ORDER BY seq LIMIT {p}) RETURNING {COLUMNS}"
    )


@functools.lru_cache(maxsize=16)
def _purge(d: Dialect, statuses: int) -> str:
    return f"DELETE FROM ops WHERE status IN ({d.params(statuses)}) AND updated_at < {d.param}"
