"""Lifecycle guarantees: TOAST, clean stop (G7), server restart, idle slot (G9)."""

from __future__ import annotations

import random
import string

from task_bridge.events import parse_lsn
from task_bridge.targets.fragment import fragment_task_uuid
from task_bridge.testing.postgres import TempCluster
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

DOC_RULES = """
rules:
  - name: doc
    table: public.docs
    on: [insert, update]
    actions:
      - op: upsert
        target: fragment
        uid: "doc-{{ after.id }}"
        task:
          fields:
            title: "{{ after.title }}"
            body_unchanged: "{{ after.body is unchanged }}"
            body_length: "{{ 0 if after.body is unchanged else after.body | length }}"
"""


def test_untouched_toasted_column_reaches_rules_as_unchanged(bridge_env: BridgeEnv) -> None:
    """An update that leaves a large TOASTed column alone gives the rule `UNCHANGED`, not None."""
    env = bridge_env
    env.sql(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    env.write_config(rules=DOC_RULES)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    body = "".join(random.Random(7).choices(string.ascii_letters, k=100_000))
    env.sql("INSERT INTO docs VALUES (1, 'first', %s)", params=(body,))
    uuid = fragment_task_uuid("doc-1")
    wait_until(lambda: uuid in env.fake.tasks(), message="task for the insert")
    assert env.fake.tasks()[uuid]["fields"]["body_unchanged"] is False
    assert env.fake.tasks()[uuid]["fields"]["body_length"] == 100_000
    env.sql("UPDATE docs SET title = 'second' WHERE id = 1")
    wait_until(lambda: env.fake.tasks()[uuid]["fields"]["title"] == "second", message="update")
    assert env.fake.tasks()[uuid]["fields"]["body_unchanged"] is True
    assert env.fake.tasks()[uuid]["fields"]["body_length"] == 0


def test_sigterm_finishes_inflight_requests_and_stores_checkpoint(bridge_env: BridgeEnv) -> None:
    """SIGTERM lets in-flight requests finish, stores the checkpoint and exits 0."""
    env = bridge_env
    env.write_config(target="batch_size: 1")  # five separate requests in flight
    env.fake.add_fault({"method": "PUT", "latency_ms": 1500})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders (id, status, created_at) SELECT g, 'paid', now()"
        " FROM generate_series(1, 5) g"
    )
    wait_until(lambda: env.fake.inflight == 5, message="5 requests in flight at the fake")
    assert env.fake.tasks() == {}
    assert bridge.terminate() == 0
    assert env.outbox_count("status = 'delivered'") == 5, "in-flight requests were let finish"
    assert env.outbox_count("status = 'inflight'") == 0
    stored = bridge.events("checkpoint.stored")
    assert stored, "the checkpoint is stored at shutdown"
    assert bridge.events("shutdown")[-1]["exit_code"] == 0
    lsn = parse_lsn(stored[-1]["lsn"])
    confirmed = env.confirmed_flush_lsn()
    assert confirmed is not None and confirmed >= lsn


def test_postgres_restart_under_running_bridge_loses_nothing(
    bridge_env: BridgeEnv, pg_cluster: TempCluster
) -> None:
    """Postgres restarted while the bridge runs: it reconnects and every change arrives."""
    env = bridge_env
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders (id, status, created_at) SELECT g, 'paid', now()"
        " FROM generate_series(1, 50) g"
    )
    pg_cluster.restart()
    env.sql(
        "INSERT INTO orders (id, status, created_at) SELECT g, 'paid', now()"
        " FROM generate_series(51, 100) g"
    )
    wait_until(lambda: len(env.fake.tasks()) == 100, timeout=90, message="100 tasks")
    assert bridge.events("source.reconnecting"), "the bridge noticed the restart"
    assert bridge.alive()
    assert env.outbox_count() == 100


def test_quiet_published_table_does_not_pin_wal(bridge_env: BridgeEnv) -> None:
    """With the published table quiet and another table busy, confirmed_flush_lsn keeps moving."""
    env = bridge_env
    env.sql("CREATE TABLE noise (id serial PRIMARY KEY, v text)")
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    start = wait_until(env.confirmed_flush_lsn, message="slot exists")
    for round_ in range(3):
        env.sql("INSERT INTO noise (v) SELECT repeat('n', 100) FROM generate_series(1, 2000)")
        target = int(env.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])
        wait_until(
            lambda t=target: (env.confirmed_flush_lsn() or 0) >= t,
            timeout=30,
            message=f"confirmed_flush_lsn to pass the noise (round {round_})",
        )
    assert (env.confirmed_flush_lsn() or 0) > start
    assert env.outbox_count() == 0


def test_changed_rule_set_updates_the_publication(bridge_env: BridgeEnv) -> None:
    """Adding a rule for another table adds that table to the publication on the next start."""
    env = bridge_env
    env.sql("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    env.write_config()
    first = env.bridge().start()
    first.wait_for_log("source.started")
    assert first.terminate() == 0

    def published() -> set[str]:
        rows = env.query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
            (env.slot,),
        )
        return {r[0] for r in rows}

    assert published() == {"public.orders"}
    env.write_config(rules=DOC_RULES)
    second = env.bridge().start()
    second.wait_for_log("source.started")
    assert published() == {"public.docs"}
    assert second.events("publication.updated")
    env.sql("INSERT INTO docs VALUES (1, 'hello', 'world')")
    wait_until(lambda: fragment_task_uuid("doc-1") in env.fake.tasks(), message="docs flow")
