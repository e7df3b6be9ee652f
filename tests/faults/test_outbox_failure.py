"""G1 when the outbox fails: a failed outbox write never lets the source be acknowledged past
what is durable, in any code path (idle acks, close, shutdown). After a restart on a healthy
outbox, every change becomes a task.

Each test makes outbox writes fail while the bridge ingests a stream of changes, waits for the
bridge to stop, then restarts it with the outbox healthy and checks that every row the
workload committed reached the fake API.
"""

from __future__ import annotations

import resource
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from task_bridge.outbox.postgres import APPLICATION_NAME
from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

PAID_RULE = """
rules:
  - name: review
    table: public.orders
    on: [insert]
    when: after.status == 'paid'
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task:
          fields:
            title: "Review order #{{ after.id }}"
            note: "{{ after.note }}"
"""


QUIET, QUIET_S = "100ms", 0.1
BIG_FIRST = 1_000_000  # ids of a big transaction's rows, beside the workload's 1, 2, 3...

# Small rows whose ops are big: the big transaction is read in one batch, written in one.
AMPLIFIED_RULE = PAID_RULE.replace("{{ after.note }}", "{{ (after.note or '') * 1000 }}")


class Workload:
    """Inserts paid orders one per transaction, with a pause between them, until stopped.
    The pause is longer than the bridge's `status_interval` (`QUIET`): the stream has quiet
    moments, when the bridge asks for keepalives whose positions it may confirm (G9). That is
    where a failed write must not let an idle position through."""

    def __init__(self, env: BridgeEnv, note: str = "", pause: float = 0.15) -> None:
        self.env = env
        self.note = note
        self.pause = pause
        self.committed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_id = 1
        while not self._stop.is_set():
            self.env.sql(
                "INSERT INTO orders (id, status, note) VALUES (%s, 'paid', %s)",
                params=(next_id, self.note),
            )
            self.committed.append(next_id)
            next_id += 1
            self._stop.wait(self.pause)

    @contextmanager
    def running(self) -> Iterator[Workload]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=60)


def _every_row_becomes_a_task(env: BridgeEnv, rows: list[int]) -> None:
    """Restart on a healthy outbox, let it catch up with the slot and deliver: every
    committed row's task is at the fake."""
    assert rows, "the workload committed nothing"
    env.processes[-1].stop()
    end = int(env.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])
    bridge = env.bridge().start()
    wait_until(
        lambda: (
            (env.confirmed_flush_lsn() or 0) >= end
            and env.outbox_count("status NOT IN ('delivered', 'dead')") == 0
        ),
        timeout=120,
        message="the restarted bridge to catch up with the slot and deliver",
    )
    tasks = env.fake.tasks()
    missing = sorted(i for i in rows if fragment_task_uuid(f"order-{i}") not in tasks)
    assert not missing, f"{len(missing)} of {len(rows)} changes lost: {missing}"
    bridge.terminate()


def _wait_stopped(env: BridgeEnv) -> int:
    bridge = env.processes[-1]
    wait_until(lambda: not bridge.alive(), timeout=120, message="the bridge stops")
    assert bridge.proc is not None
    return bridge.proc.returncode


def test_cutting_postgres_outbox_connections_mid_ingest_loses_no_change(
    bridge_env: BridgeEnv,
) -> None:
    """Postgres outbox connections cut while changes stream in: the bridge exits 2, and after
    a restart every change committed before, during and after the cut becomes a task."""
    env = bridge_env
    env.outbox_url = f"{env.dsn}?schema=cut_outbox"
    env.write_config(rules=PAID_RULE, status_interval=QUIET)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    with Workload(env).running() as work:
        wait_until(lambda: env.outbox_count() >= 20, timeout=60, message="ingest under way")
        env.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = '{APPLICATION_NAME}'"
        )
        assert _wait_stopped(env) == 2, bridge.log_tail()
        # the workload goes on after the bridge died: those changes wait in the slot
        count = len(work.committed)
        wait_until(lambda: len(work.committed) > count + 5, message="more changes")
    _every_row_becomes_a_task(env, work.committed)


def test_sqlite_outbox_hitting_the_file_size_limit_mid_batch_loses_no_change(
    bridge_env: BridgeEnv,
) -> None:
    """The SQLite outbox's write fails in the middle of a big transaction's batch (the
    process's file-size limit, `ulimit -f`, is reached) while the stream is quiet: the bridge
    stops (exit 2), and after a restart without the limit every change becomes a task."""
    env = bridge_env
    env.write_config(rules=AMPLIFIED_RULE, status_interval=QUIET)
    limit = 4 * 1024 * 1024  # the big transaction's batch alone is bigger

    def file_size_limit() -> None:  # in the child, before exec; Python ignores SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    bridge = env.bridge()
    bridge.preexec = file_size_limit
    bridge.log_level = "info"  # the limit holds for its log file too: keep that one small
    bridge.start()
    bridge.wait_for_log("source.started")
    small = list(range(1, 6))
    for i in small:
        env.sql("INSERT INTO orders (id, status) VALUES (%s, 'paid')", params=(i,))
    wait_until(lambda: env.outbox_count() == len(small), message="the small changes stored")
    big = list(range(BIG_FIRST, BIG_FIRST + 5))  # 5 ops of 1 MB
    # The big batch's write waits behind a write lock the test holds, while the stream is
    # quiet and the bridge confirms keepalives; then it fails on the file-size limit.
    with _sqlite_write_lock(env.workdir / "outbox.db"):
        env.sql(
            "INSERT INTO orders (id, status, note)"
            " SELECT g, 'paid', repeat('n', 1000) FROM generate_series(%s, %s) g",
            params=(big[0], big[-1]),
        )
        _wait_received(env, int(env.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0]))
        time.sleep(QUIET_S * 5)  # not synchronisation: quiet time, when keepalives come
    code = _wait_stopped(env)
    stopped = bridge.events("shutdown")
    assert stopped and "disk" in stopped[-1]["error"], bridge.log_tail()
    assert code == 2, bridge.log_tail()  # the outbox is unavailable, not misconfigured
    after = list(range(6, 11))
    for i in after:
        env.sql("INSERT INTO orders (id, status) VALUES (%s, 'paid')", params=(i,))
    _every_row_becomes_a_task(env, small + big + after)


@contextmanager
def _sqlite_write_lock(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on the outbox file (another connection's BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _wait_received(env: BridgeEnv, lsn: int) -> None:
    """Until the bridge reports it has received the WAL up to `lsn`."""
    wait_until(
        lambda: env.query(
            "SELECT 1 FROM pg_stat_replication r JOIN pg_replication_slots s"
            " ON s.active_pid = r.pid WHERE s.slot_name = %s"
            " AND r.write_lsn - '0/0'::pg_lsn >= %s",
            (env.slot, lsn),
        ),
        message=f"the bridge to receive the WAL up to {lsn}",
    )
