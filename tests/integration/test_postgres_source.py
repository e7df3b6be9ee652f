"""PostgresSource against a real server: typed events, positions, publication, TOAST,
replica identity, resume, idle slots (G9) and server restarts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from task_bridge.errors import SourceError, SourceUnavailable
from task_bridge.events import UNCHANGED, ChangeEvent, format_lsn, parse_lsn
from task_bridge.sources.base import Commit, Idle, SourceItem
from task_bridge.sources.postgres.source import PostgresSource
from task_bridge.testing.postgres import TempCluster, free_port
from tests.support.wait import wait_until

SLOT = "src_test"
PUB = "src_test"

ORDERS = """
CREATE TABLE public.orders (
    id bigint PRIMARY KEY, status text, amount numeric(12, 2), created_at timestamptz,
    meta jsonb, nums int[], tags text[], ref uuid, note text
);
CREATE TABLE public.other (id int PRIMARY KEY);
"""

SourceFactory = Callable[..., PostgresSource]


@pytest.fixture
def make_source(pg_dsn: str) -> Iterator[SourceFactory]:
    """Builds sources on the test database (status every 0.5 s) and closes them afterwards."""
    made: list[PostgresSource] = []

    def make(tables: list[str], **kwargs: Any) -> PostgresSource:
        kwargs.setdefault("status_interval", 0.5)
        source = PostgresSource(pg_dsn, SLOT, PUB, tables, **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def query(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def read_until(
    source: PostgresSource, commits: int, timeout: float = 20.0, ack: bool = False
) -> list[SourceItem]:
    """Read until `commits` Commit markers arrived (Idle items dropped); ack them if asked.

    Transactions that publish nothing are dropped too (acked when asked): Postgres 14 sends
    Begin/Commit for them (an ALTER PUBLICATION, a change to another table), 15+ skips them.
    """
    items: list[SourceItem] = []
    deadline = time.monotonic() + timeout
    while sum(isinstance(i, Commit) for i in items) < commits:
        assert time.monotonic() < deadline, f"timed out; got {items}"
        for item in source.read(1000, 0.2):
            if isinstance(item, Idle):
                continue
            if isinstance(item, Commit) and (not items or isinstance(items[-1], Commit)):
                pass  # an empty transaction
            else:
                items.append(item)
            if ack and isinstance(item, Commit):
                source.ack(item.position)
    return items


def changes(items: list[SourceItem]) -> list[ChangeEvent]:
    return [item for item in items if isinstance(item, ChangeEvent)]


def server_version(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.info.server_version


def confirmed_flush(dsn: str) -> int:
    rows = query(
        dsn,
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots"
        " WHERE slot_name = %s",
        (SLOT,),
    )
    return int(rows[0][0])


def test_changes_are_typed_positioned_and_followed_by_commits(
    pg_dsn: str, make_source: SourceFactory
) -> None:
    """Insert/update/delete/truncate arrive as typed events with commit-LSN positions, txid,
    commit time and one Commit marker per transaction."""
    sql(pg_dsn, ORDERS)
    source = make_source(["public.orders"])
    source.open(None)
    with psycopg.connect(pg_dsn) as conn:
        with conn.transaction():
            row = conn.execute("SELECT txid_current()").fetchone()
            assert row is not None
            xid = int(row[0])
            conn.execute(
                "INSERT INTO orders VALUES (1, 'new', 12.50, '2026-01-02 03:04:05.25+02',"
                """ '{"a": [1, null]}', '{1,2}', '{x,"y z"}',"""
                " '8c1b8d6a-3c1e-4a5e-9d8e-123456789abc', 'hello')"
            )
            conn.execute("INSERT INTO orders (id) VALUES (2)")
            conn.execute("INSERT INTO other VALUES (1)")  # not published
        with conn.transaction():
            conn.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
            conn.execute("DELETE FROM orders WHERE id = 2")
        with conn.transaction():
            conn.execute("TRUNCATE orders")
    items = read_until(source, commits=3)

    kinds = [i.op if isinstance(i, ChangeEvent) else "commit" for i in items]
    assert kinds == [
        "insert",
        "insert",
        "commit",
        "update",
        "delete",
        "commit",
        "truncate",
        "commit",
    ]
    first, second = changes(items)[:2]
    assert first.after == {
        "id": 1,
        "status": "new",
        "amount": Decimal("12.50"),
        "created_at": datetime(2026, 1, 2, 1, 4, 5, 250000, tzinfo=UTC),
        "meta": {"a": [1, None]},
        "nums": [1, 2],
        "tags": ["x", "y z"],
        "ref": UUID("8c1b8d6a-3c1e-4a5e-9d8e-123456789abc"),
        "note": "hello",
    }
    assert second.after is not None and second.after["status"] is None
    assert (first.schema, first.table, first.key, first.txid) == (
        "public",
        "orders",
        {"id": 1},
        xid,
    )
    assert first.commit_time is not None and first.commit_time.tzinfo is not None
    assert abs((datetime.now(UTC) - first.commit_time).total_seconds()) < 60

    # one position per transaction: its commit LSN, indexes 0.., and a Commit past it
    commits = [parse_lsn(i.position) for i in items if isinstance(i, Commit)]
    positions = [(e.position.lsn, e.position.index) for e in changes(items)]
    lsn1, lsn2, lsn3 = positions[0][0], positions[2][0], positions[4][0]
    assert positions == [(lsn1, 0), (lsn1, 1), (lsn2, 0), (lsn2, 1), (lsn3, 0)]
    assert lsn1 is not None and lsn2 is not None and lsn3 is not None
    assert lsn1 < commits[0] <= lsn2 < commits[1] <= lsn3 < commits[2]
    update, delete, truncate = changes(items)[2:]
    assert update.before is None and update.after is not None and update.after["status"] == "paid"
    assert delete.after is None and delete.before == {"id": 2} and delete.key == {"id": 2}
    assert truncate.after is None and truncate.before is None


def test_read_returns_nothing_after_its_timeout_on_a_quiet_slot(
    pg_dsn: str, make_source: SourceFactory
) -> None:
    """On a quiet slot read() returns no change events and comes back within its timeout."""
    sql(pg_dsn, ORDERS)
    source = make_source(["public.orders"], status_interval=10.0)
    source.open(None)
    started = time.monotonic()
    items = source.read(100, 0.3)
    # far below the 10 s status interval a blocking read would wait for, whatever the load
    assert time.monotonic() - started < 5.0
    assert not changes(items)


def published(dsn: str) -> set[str]:
    rows = query(
        dsn,
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
        (PUB,),
    )
    return {r[0] for r in rows}


def test_publication_follows_the_table_set(pg_dsn: str, make_source: SourceFactory) -> None:
    """The publication is created for the named tables, altered when globs add tables, covers a
    whole schema for `schema.*`, and a missing table is a SourceError naming it."""
    sql(
        pg_dsn,
        "CREATE TABLE a (id int PRIMARY KEY)",
        "CREATE TABLE b1 (id int PRIMARY KEY)",
        "CREATE TABLE b2 (id int PRIMARY KEY)",
        "CREATE SCHEMA sales",
        "CREATE TABLE sales.x (id int PRIMARY KEY)",
    )
    first = make_source(["public.a"])
    first.open(None)
    assert published(pg_dsn) == {"public.a"}
    first.close()

    second = make_source(["public.a", "public.b*"])
    second.open(None)
    assert published(pg_dsn) == {"public.a", "public.b1", "public.b2"}
    sql(pg_dsn, "INSERT INTO b2 VALUES (5)")
    (event,) = changes(read_until(second, commits=1, ack=True))
    assert (event.table, event.after) == ("b2", {"id": 5})
    second.close()

    third = make_source(["sales.*"])
    third.open(None)
    assert published(pg_dsn) == {"sales.x"}
    if server_version(pg_dsn) >= 150000:
        schemas = query(
            pg_dsn,
            "SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_publication p"
            " ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid"
            " WHERE p.pubname = %s",
            (PUB,),
        )
        assert schemas == [("sales",)]
    third.close()

    with pytest.raises(SourceError, match=r"public\.missing"):
        make_source(["public.a", "public.missing"]).open(None)


def test_schema_on_14_is_its_tables_kept_in_step(
    pg_dsn: str, make_source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Before Postgres 15 (no TABLES IN SCHEMA) `schema.*` publishes the schema's tables, with a
    warning that says so; a table created later joins the publication at the next open."""
    if server_version(pg_dsn) >= 150000:
        pytest.skip("Postgres 15+ publishes the schema itself (test_publication_follows...)")
    sql(pg_dsn, "CREATE SCHEMA sales", "CREATE TABLE sales.x (id int PRIMARY KEY)")
    first = make_source(["sales.*"])
    with caplog.at_level(logging.WARNING, logger="task_bridge"):
        first.open(None)
    assert published(pg_dsn) == {"sales.x"}
    (warning,) = [r for r in caplog.records if r.getMessage() == "publication.schema_enumerated"]
    assert warning.__dict__["ctx"]["schemas"] == ["sales"]
    first.close()

    sql(pg_dsn, "CREATE TABLE sales.y (id int PRIMARY KEY)")
    second = make_source(["sales.*"])
    second.open(None)
    assert published(pg_dsn) == {"sales.x", "sales.y"}
    sql(pg_dsn, "INSERT INTO sales.y VALUES (7)")
    (event,) = changes(read_until(second, commits=1, ack=True))
    assert (event.schema, event.table, event.after) == ("sales", "y", {"id": 7})


def test_no_table_named_never_drops_the_publication(
    pg_dsn: str, make_source: SourceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With no table named (rules only for Human Lambdas queues, or globs that match nothing),
    an existing publication is left as it is (same object, same tables) with a warning that
    says why, and the slot still streams; a missing one is created empty."""
    sql(pg_dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    first = make_source(["public.a"])
    first.open(None)
    first.close()
    (before,) = query(pg_dsn, "SELECT oid FROM pg_publication WHERE pubname = %s", (PUB,))

    for tables in ([], ["public.nothing_like_this*"]):
        caplog.clear()
        source = make_source(tables)
        with caplog.at_level(logging.WARNING, logger="task_bridge"):
            source.open(None)
        (after,) = query(pg_dsn, "SELECT oid FROM pg_publication WHERE pubname = %s", (PUB,))
        assert after == before, "the publication was dropped and made again"
        assert published(pg_dsn) == {"public.a"}
        (kept,) = [r for r in caplog.records if r.getMessage() == "publication.kept"]
        ctx = kept.__dict__["ctx"]
        assert ctx["publication"] == PUB and ctx["published"] == ["public.a"]
        assert "no rule names a table" in ctx["reason"]
        sql(pg_dsn, f"INSERT INTO a VALUES ({len(tables) + 1})")
        (event,) = changes(read_until(source, commits=1, ack=True))
        assert event.after == {"id": len(tables) + 1}
        source.close()

    sql(pg_dsn, f"DROP PUBLICATION {PUB}")
    make_source([]).open(None)
    assert query(pg_dsn, "SELECT count(*) FROM pg_publication WHERE pubname = %s", (PUB,)) == [(1,)]
    assert published(pg_dsn) == set()


def test_unchanged_toasted_column_arrives_as_unchanged(
    pg_dsn: str, make_source: SourceFactory
) -> None:
    """An out-of-line TOASTed text column untouched by an update is UNCHANGED, never None."""
    sql(
        pg_dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, n int, body text)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    source = make_source(["public.docs"])
    source.open(None)
    sql(
        pg_dsn,
        "INSERT INTO docs SELECT 1, 0, string_agg(md5(i::text), '')"
        " FROM generate_series(1, 3200) i",
        "UPDATE docs SET n = 1 WHERE id = 1",
    )
    insert, update = changes(read_until(source, commits=2))
    assert insert.after is not None and len(insert.after["body"]) == 3200 * 32
    assert update.after == {"id": 1, "n": 1, "body": UNCHANGED}
    assert update.after["body"] is UNCHANGED


def test_replica_identity_full_gives_the_whole_before_row(
    pg_dsn: str, make_source: SourceFactory
) -> None:
    """With REPLICA IDENTITY FULL updates and deletes carry the full old row; key stays the PK."""
    sql(
        pg_dsn,
        "CREATE TABLE full_t (id int PRIMARY KEY, status text, amount numeric)",
        "ALTER TABLE full_t REPLICA IDENTITY FULL",
    )
    source = make_source(["public.full_t"])
    source.open(None)
    sql(
        pg_dsn,
        "INSERT INTO full_t VALUES (1, 'new', 3.5)",
        "UPDATE full_t SET status = 'paid' WHERE id = 1",
        "DELETE FROM full_t WHERE id = 1",
    )
    _insert, update, delete = changes(read_until(source, commits=3))
    assert update.before == {"id": 1, "status": "new", "amount": Decimal("3.5")}
    assert update.changed == ["status"] and update.key == {"id": 1}
    assert delete.before == {"id": 1, "status": "paid", "amount": Decimal("3.5")}
    assert delete.key == {"id": 1}


def test_resume_after_ack_skips_acked_and_redelivers_unacked(
    pg_dsn: str, make_source: SourceFactory
) -> None:
    """Reopening from an acked position does not redeliver earlier transactions, but the
    transaction after it, read and never acked, comes again (G1)."""
    sql(pg_dsn, ORDERS)
    source = make_source(["public.orders"])
    source.open(None)
    sql(pg_dsn, "INSERT INTO orders (id) VALUES (1)")
    (commit1,) = [i for i in read_until(source, commits=1) if isinstance(i, Commit)]
    source.ack(commit1.position)
    sql(pg_dsn, "INSERT INTO orders (id) VALUES (2)")
    read_until(source, commits=1)  # read, never acked
    source.close()
    assert confirmed_flush(pg_dsn) == parse_lsn(commit1.position)

    sql(pg_dsn, "INSERT INTO orders (id) VALUES (3)")
    again = make_source(["public.orders"])
    again.open(commit1.position)
    events = changes(read_until(again, commits=2))
    assert [e.after["id"] for e in events if e.after] == [2, 3]


def test_idle_positions_advance_a_quiet_slot(pg_dsn: str, make_source: SourceFactory) -> None:
    """While only an unpublished table takes writes, acking Idle positions moves the slot's
    confirmed_flush_lsn past those writes (G9: a quiet slot holds no WAL)."""
    sql(
        pg_dsn,
        "CREATE TABLE quiet (id int PRIMARY KEY)",
        "CREATE TABLE busy (id int PRIMARY KEY, pad text)",
    )
    source = make_source(["public.quiet"])
    source.open(None)
    start = confirmed_flush(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for i in range(50):
            conn.execute("INSERT INTO busy VALUES (%s, repeat('x', 2000))", (i,))
        row = conn.execute(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
        ).fetchone()
        assert row is not None
        written = int(row[0])
    assert written > start
    seen: list[SourceItem] = []

    def advanced() -> bool:
        for item in source.read(100, 0.2):
            seen.append(item)
            if isinstance(item, Idle | Commit) and item.position:
                source.ack(item.position)
        return confirmed_flush(pg_dsn) >= written

    wait_until(advanced, timeout=30, interval=0, message="confirmed_flush_lsn to pass the writes")
    assert not changes(seen)
    assert any(isinstance(item, Idle) for item in seen)


def test_server_restart_raises_unavailable_and_reopen_resumes(
    pg_dsn: str, pg_cluster: TempCluster, make_source: SourceFactory
) -> None:
    """A server restart makes read() raise SourceUnavailable; open() from the checkpoint then
    delivers what was written afterwards and nothing acked before."""
    sql(pg_dsn, ORDERS)
    source = make_source(["public.orders"])
    source.open(None)
    sql(pg_dsn, "INSERT INTO orders (id) VALUES (1)")
    read_until(source, commits=1, ack=True)
    checkpoint = source.acked

    restart = threading.Thread(target=pg_cluster.restart)
    restart.start()
    try:
        deadline = time.monotonic() + 60
        with pytest.raises(SourceUnavailable):
            while time.monotonic() < deadline:  # keep confirming so the walsender can exit
                for item in source.read(100, 0.2):
                    if isinstance(item, Idle | Commit) and item.position:
                        source.ack(item.position)
                        checkpoint = source.acked
    finally:
        restart.join(timeout=90)
    assert not restart.is_alive() and pg_cluster.running

    sql(pg_dsn, "INSERT INTO orders (id) VALUES (2)")
    source.close()
    source.open(format_lsn(checkpoint))
    assert [e.key for e in changes(read_until(source, commits=1))] == [{"id": 2}]


def test_server_crash_redelivers_what_was_not_acked(
    pg_dsn: str, pg_cluster: TempCluster, make_source: SourceFactory
) -> None:
    """After an immediate shutdown read() raises SourceUnavailable, and reopening from the last
    ack redelivers the transaction that was read but not acknowledged."""
    sql(pg_dsn, ORDERS)
    source = make_source(["public.orders"])
    source.open(None)
    sql(pg_dsn, "INSERT INTO orders (id) VALUES (1)")
    (commit1,) = [i for i in read_until(source, commits=1) if isinstance(i, Commit)]
    source.ack(commit1.position)
    sql(pg_dsn, "INSERT INTO orders (id) VALUES (2)")
    read_until(source, commits=1)

    pg_cluster.kill()
    with pytest.raises(SourceUnavailable):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            source.read(100, 0.2)
    pg_cluster.start()

    source.close()
    source.open(commit1.position)
    assert [e.key for e in changes(read_until(source, commits=1))] == [{"id": 2}]


def test_connection_failure_is_unavailable_without_the_password(
    make_source: SourceFactory,
) -> None:
    """An unreachable server is SourceUnavailable, and the message does not echo the password."""
    dsn = f"postgresql://bridge:hunter2secret@127.0.0.1:{free_port()}/nowhere"
    source = PostgresSource(dsn, SLOT, PUB, ["public.orders"])
    with pytest.raises(SourceUnavailable) as info:
        source.open(None)
    assert "hunter2secret" not in str(info.value)
    source.close()
    source.close()  # idempotent


def test_slot_of_another_database_is_refused(
    pg_dsn: str, pg_cluster: TempCluster, make_source: SourceFactory
) -> None:
    """A slot name already used in another database is a clear SourceError, not a stream error."""
    sql(pg_dsn, ORDERS)
    other = f"other_{int(time.time() * 1000)}"
    other_dsn = pg_cluster.create_database(other)
    try:
        sql(other_dsn, "SELECT pg_create_logical_replication_slot('src_test', 'pgoutput')")
        with pytest.raises(SourceError, match="belongs to database"):
            make_source(["public.orders"]).open(None)
    finally:
        pg_cluster.drop_database(other)
