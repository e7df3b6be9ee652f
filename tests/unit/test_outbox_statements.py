"""The outbox's statements as each backend runs them: the dialect decides placeholders, index
hints and upserts; the status sets of `base.py` decide the predicates."""

from __future__ import annotations

import re

import pytest

from task_bridge.outbox.base import BLOCKING, FINISHED, OPEN, STATUSES, TERMINAL
from task_bridge.outbox.postgres import PostgresOutbox
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.outbox.statements import (
    INDEXES,
    IS_BLOCKING,
    IS_OPEN,
    POSTGRES,
    SQLITE,
    Statements,
    sql_list,
)


def every_statement(q: Statements) -> dict[str, str]:
    fixed = {
        name: value for name, value in vars(q).items() if isinstance(value, str) and name[0] != "_"
    }
    for shape in ((0, False, 0), (2, True, 3)):
        fixed[f"claim{shape}"] = q.claim(*shape)
    fixed["purge(2)"] = q.purge(2)
    return fixed


def test_the_dialect_renders_placeholders_hints_and_upserts() -> None:
    assert (SQLITE.param, SQLITE.params(3), SQLITE.hint("ops_ready")) == (
        "?",
        "?, ?, ?",
        " INDEXED BY ops_ready",
    )
    assert (POSTGRES.param, POSTGRES.params(2), POSTGRES.hint("ops_ready")) == ("%s", "%s, %s", "")
    assert POSTGRES.upsert("task_map", ("target", "uid"), ("remote_id",)) == (
        "INSERT INTO task_map (target, uid, remote_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (target, uid) DO UPDATE SET remote_id = excluded.remote_id"
    )


def test_each_backend_gets_its_own_dialect_only() -> None:
    """No statement of the Postgres outbox carries SQLite's `?` or hints, and the other way
    round; each has as many placeholders as the same statement on the other backend."""
    lite, pg = every_statement(SqliteOutbox.sql), every_statement(PostgresOutbox.sql)
    assert lite.keys() == pg.keys() and len(lite) > 30
    for name, text in pg.items():
        assert "?" not in text and "INDEXED BY" not in text, name
    for name, text in lite.items():
        assert "%s" not in text, name
        extra = 1 if name.startswith("claim") else 0  # the Postgres claim names its claimer
        assert text.count("?") + extra == pg[name].count("%s"), name
    assert "claimed_by = %s" in pg["claim(0, False, 0)"]
    assert "claimed_by" not in lite["claim(0, False, 0)"]


def test_the_hinted_statements_keep_their_indexes_on_sqlite() -> None:
    """Every `INDEXED BY` is a statement SQLite can run with that index: a partial index is
    usable only when the query repeats its WHERE terms, which the shared constants ensure."""
    box = SqliteOutbox(":memory:")
    try:
        conn = box._conn
        hinted = {n: t for n, t in every_statement(SqliteOutbox.sql).items() if "INDEXED BY" in t}
        assert {re.search(r"INDEXED BY (\w+)", t).group(1) for t in hinted.values()} == {  # type: ignore[union-attr]
            "ops_ready",
            "ops_ready_due",
            "ops_chain",
            "ops_blocked",
        }
        for name, text in hinted.items():
            params = [0] * text.count("?")
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + text, params))
            index = re.search(r"INDEXED BY (\w+)", text).group(1)  # type: ignore[union-attr]
            assert f"USING INDEX {index}" in plan or f"COVERING INDEX {index}" in plan, (name, plan)
    finally:
        box.close()


def test_the_predicates_are_the_named_status_sets() -> None:
    assert set(OPEN) | set(FINISHED) == set(STATUSES) and not set(OPEN) & set(FINISHED)
    assert set(BLOCKING) <= set(OPEN) and set(FINISHED) <= set(TERMINAL)
    assert IS_OPEN == "status NOT IN ('delivered', 'skipped')"
    assert IS_BLOCKING == "status IN ('dead', 'parked')" == f"status IN {sql_list(BLOCKING)}"
    assert any(IS_OPEN in index for index in INDEXES) and any(IS_BLOCKING in i for i in INDEXES)


@pytest.mark.parametrize("statuses", [("delivered",), ("dead", "parked", "waiting")])
def test_purge_renders_one_placeholder_per_status(statuses: tuple[str, ...]) -> None:
    text = SqliteOutbox.sql.purge(len(statuses))
    assert text.count("?") == len(statuses) + 1
