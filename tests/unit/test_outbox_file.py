"""File-backed SqliteOutbox: URLs, reopening, two connections at once, query plans."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from task_bridge.errors import ConfigError, OutboxError
from task_bridge.outbox import SqliteOutbox, open_outbox, sqlite_path
from task_bridge.outbox.base import OpResult
from tests.support.ops import make_op

SOURCE = "postgres:slot"


def test_urls_follow_the_sqlalchemy_convention(tmp_path: Path) -> None:
    """Three slashes mean relative to the base dir, four mean absolute, :memory: stays."""
    assert sqlite_path("sqlite:///outbox.db", tmp_path) == (str(tmp_path / "outbox.db"), "NORMAL")
    assert sqlite_path("sqlite:////var/x/o.db", tmp_path) == ("/var/x/o.db", "NORMAL")
    assert sqlite_path("sqlite:///:memory:", tmp_path) == (":memory:", "NORMAL")
    assert sqlite_path("sqlite:///o.db?synchronous=full", tmp_path)[1] == "FULL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@db/x?schema=Bad-Name", "schema 'Bad-Name' is not a plain"),
        ("mysql://u:secret@db/x", "got 'mysql'"),
        ("sqlite://o.db", "expected sqlite:///"),
        ("sqlite:///", "no database path"),
        ("sqlite:///o.db?journal=off", "unknown option"),
    ],
)
def test_bad_urls_are_config_errors(tmp_path: Path, url: str, message: str) -> None:
    """Unsupported or malformed outbox URLs raise ConfigError with a message saying why."""
    with pytest.raises(ConfigError, match=message):
        open_outbox(url, tmp_path)


def test_reopened_file_keeps_ops_checkpoint_map_and_state(tmp_path: Path) -> None:
    """Everything committed survives closing and reopening the file (parent dirs are created)."""
    url = "sqlite:///data/nested/outbox.db"
    box = open_outbox(url, tmp_path)
    box.put([make_op(1, "a"), make_op(2, "a")], SOURCE, "0/AB", now=1.0)
    (head,) = box.claim_due(now=1.0, limit=10)
    box.complete([OpResult(head.seq, "delivered", 1, now=2.0, remote_id="r-1")])
    box.set_state("k", "v")
    box.close()

    box = open_outbox(url, tmp_path)
    try:
        assert (tmp_path / "data" / "nested" / "outbox.db").exists()
        assert box.get_checkpoint(SOURCE) == "0/AB"
        assert box.counts()["delivered"] == 1
        assert box.get_remote_id("fragment", "a") == "r-1"
        assert box.get_state("k") == "v"
        assert [op.payload["n"] for op in box.claim_due(now=3.0, limit=10)] == [2]
        assert box.put([make_op(1, "a")], SOURCE, None, now=4.0) == 0, "still idempotent"
    finally:
        box.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer schema version is refused with an OutboxError, not misread."""
    path = str(tmp_path / "o.db")
    box = SqliteOutbox(path)
    box.set_state("schema_version", "999")
    box.close()
    with pytest.raises(OutboxError, match="schema version 999"):
        SqliteOutbox(path)


def test_ingest_and_delivery_connections_work_concurrently(tmp_path: Path) -> None:
    """One thread putting batches and another claiming/completing on the same file lose nothing."""
    path = str(tmp_path / "o.db")
    total, batch = 4000, 200
    errors: list[BaseException] = []
    delivered_order: dict[str, list[int]] = {}

    def ingest() -> None:
        box = SqliteOutbox(path)
        try:
            for start in range(0, total, batch):
                ops = [make_op(n, f"u{n % 50}") for n in range(start, start + batch)]
                box.put(ops, SOURCE, f"0/{start + batch:X}", now=time.time())
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            box.close()

    def deliver() -> None:
        box = SqliteOutbox(path)
        deadline = time.monotonic() + 60
        done = 0
        try:
            while done < total and time.monotonic() < deadline:
                claimed = box.claim_due(now=time.time(), limit=64)
                for op in claimed:
                    delivered_order.setdefault(op.uid, []).append(op.payload["n"])
                box.complete([OpResult(op.seq, "delivered", 1, now=time.time()) for op in claimed])
                done += len(claimed)
        except BaseException as exc:
            errors.append(exc)
        finally:
            box.close()

    threads = [threading.Thread(target=ingest), threading.Thread(target=deliver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    box = SqliteOutbox(path)
    try:
        assert box.counts()["delivered"] == total
        assert box.get_checkpoint(SOURCE) == f"0/{total:X}"
    finally:
        box.close()
    assert all(ns == sorted(ns) for ns in delivered_order.values()), "per-UID order kept"
    assert sum(len(ns) for ns in delivered_order.values()) == total


def test_claim_reads_ready_index_not_the_backlog(tmp_path: Path) -> None:
    """Claiming and next_due_at use the ready-head indexes, never a scan of the ops table."""
    box = SqliteOutbox(str(tmp_path / "o.db"))
    try:
        box.put([make_op(n, f"u{n % 100}") for n in range(2000)], SOURCE, None, now=1.0)
        box._conn.execute("ANALYZE")
        claim_sql = (
            "SELECT seq FROM ops INDEXED BY ops_ready WHERE status = 'pending' AND head = 1"
            " AND next_attempt_at <= 5 ORDER BY seq LIMIT 10"
        )
        plans = {
            sql: " | ".join(r[3] for r in box._conn.execute("EXPLAIN QUERY PLAN " + sql))
            for sql in (
                claim_sql,
                "SELECT MIN(next_attempt_at) FROM ops INDEXED BY ops_ready_due"
                " WHERE status = 'pending' AND head = 1",
            )
        }
        for sql, plan in plans.items():
            assert "ops_ready" in plan and "TEMP B-TREE" not in plan, (sql, plan)
        assert len(box.claim_due(now=5.0, limit=1000)) == 100, "one head per UID"
    finally:
        box.close()


def test_maintain_checkpoints_the_wal_at_most_once_a_second(tmp_path: Path) -> None:
    """The ingest writer's upkeep copies the WAL into the database file (off the write lock),
    and does so at most once per CHECKPOINT_INTERVAL_S however often it is called."""
    box = open_outbox("sqlite:///outbox.db", tmp_path)
    try:
        db = tmp_path / "outbox.db"
        box.put([make_op(n, f"u{n}") for n in range(200)], SOURCE, "0/1", now=1.0)
        before = db.stat().st_size
        box.maintain()
        after = db.stat().st_size
        assert after > before, "the WAL's pages are in the database file now"
        box.put([make_op(n, f"u{n}") for n in range(200, 2000)], SOURCE, "0/2", now=1.0)
        box.maintain()  # within the interval: nothing copied
        assert db.stat().st_size == after
    finally:
        box.close()


class _ObservedLock:
    """The outboxes' shared write lock, telling the test when someone waits to take it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_maintain_lets_the_wal_start_over_after_a_commit_during_its_checkpoint(
    tmp_path: Path,
) -> None:
    """SQLite rewinds the WAL only when a write begins with every frame copied. Delivery
    commits all the time, also while the ingest writer's checkpoint copies frames; upkeep must
    still get the WAL rewound, or it grows to the autocheckpoint backstop (~200 MB) and the
    commit that rewinds it truncates it while holding the write lock. Each round, another
    connection commits while `maintain()` is between its copy off the lock and its wait for
    the lock (the order forced by holding the lock); the next write must still start over."""
    path = tmp_path / "outbox.db"
    lock = _ObservedLock()
    rounds = 20
    ingest = SqliteOutbox(str(path), write_lock=lock, checkpoint_interval=0.0)  # type: ignore[arg-type]
    delivery = SqliteOutbox(str(path), write_lock=lock)  # type: ignore[arg-type]
    other = sqlite3.connect(path, isolation_level=None, timeout=30)  # delivery's commit, raw
    try:
        for n in range(rounds):
            ingest.put([make_op(n * 10 + k, f"u{n}-{k}") for k in range(10)], SOURCE, None, 1.0)
            lock.waiting.clear()
            with lock.lock:  # maintain() copies off the lock, then waits here
                upkeep = threading.Thread(target=ingest.maintain)
                upkeep.start()
                assert lock.waiting.wait(30), "maintain() takes the write lock"
                other.execute(
                    "INSERT INTO state (key, value) VALUES ('beat', ?) ON CONFLICT"
                    " (key) DO UPDATE SET value = excluded.value",
                    (str(n),),
                )
            upkeep.join(30)
            delivery.set_state("beat", "next write")
        with (tmp_path / "outbox.db-wal").open("rb") as wal:
            header = wal.read(32)
    finally:
        other.close()
        ingest.close()
        delivery.close()
    # the WAL header counts the times the WAL started over (checkpoint sequence number)
    started_over = int.from_bytes(header[12:16], "big")
    assert started_over >= rounds, f"the WAL started over {started_over} times in {rounds} rounds"


def test_a_batch_bigger_than_sqlite_takes_in_one_string_is_stored_whole() -> None:
    """Ops adding up to more than SQLite's string limit (10**9 bytes: "string or blob too
    big") in one batch are stored, with their checkpoint, in one transaction. (In memory: the
    limit is SQLite's, whatever the file.)"""
    outbox = SqliteOutbox(":memory:")
    note = "n" * 1_000_000
    ops = [make_op(n, uid=f"u{n}", payload={"note": note}) for n in range(1010)]
    try:
        assert outbox.put(ops, SOURCE, "0/10", now=1.0) == len(ops)
        assert outbox.get_checkpoint(SOURCE) == "0/10"
        assert outbox.counts()["pending"] == len(ops)
    finally:
        outbox.close()
