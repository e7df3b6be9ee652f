"""The Postgres outbox shared by several bridges: concurrent writers and claimers, a dead
claimer's inflight ops taken over, per-partition checkpoints merged, connection errors."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from task_bridge.app import TAKEOVER_MARGIN_S, open_configured_outbox
from task_bridge.config import load_config
from task_bridge.errors import OutboxError, OutboxUnavailable
from task_bridge.outbox import open_outbox
from task_bridge.outbox.base import OpResult
from task_bridge.outbox.postgres import PostgresOutbox
from task_bridge.sources.kafka import PartitionOffsets
from task_bridge.testing.postgres import TempCluster
from tests.support.ops import make_op
from tests.support.wait import wait_until

SOURCE = "kafka:group"
_schemas = itertools.count()


@pytest.fixture
def open_box(pg_dsn: str) -> Iterator[Callable[[], PostgresOutbox]]:
    """Opens another outbox on one schema (another bridge, or another thread of one)."""
    url = f"{pg_dsn}?schema=shared{next(_schemas)}"
    opened: list[PostgresOutbox] = []

    def open_one() -> PostgresOutbox:
        opened.append(PostgresOutbox(url))
        return opened[-1]

    yield open_one
    for box in opened:
        box.close()


def test_two_writers_store_each_op_once(open_box: Callable[[], PostgresOutbox]) -> None:
    """Two bridges putting overlapping batches at once (a takeover re-reading what the other
    stored) insert every op exactly once, and the inserted counts add up."""
    boxes = [open_box(), open_box()]
    ops = [make_op(n, uid=f"u{n % 50}") for n in range(2000)]
    inserted = [0, 0]

    def write(i: int) -> None:
        for start in range(0, len(ops), 100):
            inserted[i] += boxes[i].put(ops[start : start + 100], SOURCE, None, now=1.0)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(inserted) == len(ops)
    assert boxes[0].counts()["pending"] == len(ops)


def test_concurrent_claimers_share_the_work_in_per_task_order(
    open_box: Callable[[], PostgresOutbox],
) -> None:
    """Two claimers draining one outbox at once: every op is claimed exactly once, and no op
    is claimed before the one ahead of it in its task is completed."""
    writer = open_box()
    writer.put([make_op(n, uid=f"u{n % 20}") for n in range(1000)], SOURCE, None, now=1.0)
    claimed: list[list[int]] = [[], []]
    # tickets taken just after a claim returns and just before a completion starts: a claim
    # that follows its predecessor's commit always has the later ticket
    ticket = itertools.count()
    claimed_at: dict[int, int] = {}
    completing_at: dict[int, int] = {}
    lock = threading.Lock()

    def drain(i: int) -> None:
        box = open_box()
        while True:
            ops = box.claim_due(now=2.0, limit=25)
            if not ops:
                if box.counts()["pending"] == 0 and box.counts()["inflight"] == 0:
                    return
                continue
            with lock:
                for op in ops:
                    claimed_at[op.payload["n"]] = next(ticket)
                    claimed[i].append(op.payload["n"])
            with lock:
                for op in ops:
                    completing_at[op.payload["n"]] = next(ticket)
            box.complete([OpResult(op.seq, "delivered", 1, now=2.0) for op in ops])

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed[0] + claimed[1]) == list(range(1000))
    assert claimed[0] and claimed[1], "both claimers got work"
    early = [n for n in range(20, 1000) if claimed_at[n] < completing_at[n - 20]]
    assert not early, "claimed before the op ahead of it was completed"


def test_a_dead_claimers_inflight_ops_are_taken_over(
    open_box: Callable[[], PostgresOutbox],
) -> None:
    """Ops claimed by a live bridge stay its own; once its connection is gone (the process
    died), another bridge's reclaim returns them to pending, and it claims them."""
    a, b = open_box(), open_box()
    a.put([make_op(n, uid=f"u{n}") for n in range(3)], SOURCE, None, now=1.0)
    assert len(a.claim_due(now=1.0, limit=10)) == 3
    assert b.claim_due(now=1.0, limit=10) == []
    assert b.reclaim_orphans() == 0, "a is alive"
    a.close()
    reclaimed = [0]  # a's server process ends (and frees its lock) a moment after the close

    def reclaim() -> bool:
        reclaimed[0] += b.reclaim_orphans()
        return reclaimed[0] >= 3

    wait_until(reclaim, timeout=10, message="a's claims reclaimed")
    assert reclaimed == [3]
    taken = b.claim_due(now=1.0, limit=10)
    assert sorted(op.payload["n"] for op in taken) == [0, 1, 2]
    assert b.counts()["inflight"] == 3


def test_partition_checkpoints_of_two_bridges_are_merged(
    open_box: Callable[[], PostgresOutbox],
) -> None:
    """Kafka checkpoints (JSON objects of partition offsets) merge key by key: each bridge
    writes the partitions it holds without erasing the other's; other checkpoints replace."""
    a, b = open_box(), open_box()
    a.put([], SOURCE, PartitionOffsets('{"t:0": 10, "t:1": 20}'), now=1.0)
    b.put([], SOURCE, PartitionOffsets('{"t:2": 5}'), now=1.0)
    a.put([], SOURCE, PartitionOffsets('{"t:0": 11}'), now=1.0)
    assert a.get_checkpoint(SOURCE) == '{"t:0": 11, "t:1": 20, "t:2": 5}'
    a.put([], "postgres:slot", "0/10", now=1.0)
    a.put([], "postgres:slot", "0/20", now=1.0)
    assert b.get_checkpoint("postgres:slot") == "0/20"


def test_outboxes_in_different_schemas_are_separate(pg_dsn: str, tmp_path: object) -> None:
    """The schema named in the URL holds the tables (created when missing); the default is
    `task_bridge`, away from the application's own tables."""
    one = open_outbox(f"{pg_dsn}?schema=one", tmp_path)  # type: ignore[arg-type]
    default = open_outbox(pg_dsn, tmp_path)  # type: ignore[arg-type]
    try:
        one.put([make_op(1, "u")], SOURCE, None, now=1.0)
        assert one.counts()["pending"] == 1
        assert default.counts()["pending"] == 0
        with psycopg.connect(pg_dsn) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'ops'"
                )
            }
        assert tables == {"one", "task_bridge"}
    finally:
        one.close()
        default.close()


def test_outbox_errors_name_the_server_but_never_the_password(pg_cluster: TempCluster) -> None:
    """A closed port raises OutboxUnavailable (exit 2); a role that may not create the schema
    gets Postgres's reason. Both messages name the server with the password masked."""
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS outbox_user")
        conn.execute("CREATE ROLE outbox_user LOGIN PASSWORD 'right'")
    closed = "postgresql://outbox_user:s3cr3t-pw@127.0.0.1:1/postgres"
    with pytest.raises(OutboxUnavailable) as unavailable:
        PostgresOutbox(closed)
    denied = f"postgresql://outbox_user:s3cr3t-pw@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(OutboxError, match="permission denied") as refused:
        PostgresOutbox(denied)
    for message in (str(unavailable.value), str(refused.value)):
        assert "s3cr3t-pw" not in message
        assert "outbox_user:***@127.0.0.1" in message


def test_a_newer_schema_version_is_refused(open_box: Callable[[], PostgresOutbox]) -> None:
    """An outbox written by a newer bridge is not silently reused by an older one."""
    box = open_box()
    box.set_state("schema_version", "99")
    with pytest.raises(OutboxError, match="schema version 99"):
        open_box()


def test_outbox_commits_are_durable_where_the_server_defaults_to_async_commit(
    open_box: Callable[[], PostgresOutbox], pg_dsn: str
) -> None:
    """G1: the source is acknowledged once the outbox commit returns, so that commit must be
    flushed: the outbox's sessions use synchronous_commit=on even where the server's default
    (the test cluster's, here) or the database's is off (a crash lost acknowledged changes)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    box = open_box()
    assert box._conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def _open_together(url: str, bridges: int) -> list[BaseException]:
    """Open `bridges` outboxes on `url` at one instant; the errors they raised."""
    start = threading.Barrier(bridges)
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            PostgresOutbox(url).close()
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(bridges)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_bridges_opening_a_new_shared_outbox_at_once_all_start(pg_dsn: str) -> None:
    """Bridges started together on a new schema each open the outbox (CREATE SCHEMA IF NOT
    EXISTS run concurrently raised a unique violation, and one bridge exited at startup)."""
    for round_ in range(5):
        assert _open_together(f"{pg_dsn}?schema=together{round_}", 6) == []


def test_ops_taken_over_wait_for_the_longest_request_timeout(pg_dsn: str, tmp_path: Path) -> None:
    """A bridge's outbox holds the ops it takes over from a dead claimer for the longest
    request timeout of its config and a margin: the claimer may be a bridge cut off from the
    outbox whose request is still on its way (G4)."""
    url = f"{pg_dsn}?schema=held"
    path = tmp_path / "bridge.yaml"
    path.write_text(
        f"""source:
  postgres: {{dsn: "{pg_dsn}"}}
outbox: {{url: "{url}"}}
delivery: {{timeout: 1500ms}}
targets:
  slow: {{kind: fragment, base_url: "http://127.0.0.1:9", token: t, timeout: 4s}}
  fast: {{kind: fragment, base_url: "http://127.0.0.1:9", token: t}}
"""
    )
    a = PostgresOutbox(url)
    a.put([make_op(1)], SOURCE, None, now=1.0)
    assert len(a.claim_due(now=1.0, limit=10)) == 1
    a.close()
    b = open_configured_outbox(load_config(path))
    try:
        assert isinstance(b, PostgresOutbox)
        assert b.takeover_hold == 4.0 + TAKEOVER_MARGIN_S
        before = time.time()
        wait_until(b.reclaim_orphans, timeout=10, message="the dead claimer's op reclaimed")
        due = b.next_due_at()
        assert due is not None and due >= before + b.takeover_hold
        assert b.claim_due(now=due - 0.1, limit=10) == []
        assert len(b.claim_due(now=due, limit=10)) == 1
    finally:
        b.close()
