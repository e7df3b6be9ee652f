"""Faults at the fake API: transient ones converge; a permanent one dead-letters one op only."""

from __future__ import annotations

import subprocess
import sys

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until


def _insert_paid(env: BridgeEnv, ids: range) -> None:
    env.sql(
        "INSERT INTO orders (id, status, amount, created_at) SELECT g, 'paid', g,"
        f" '2026-01-01T00:00:00Z' FROM generate_series({ids.start}, {ids.stop - 1}) g"
    )


def test_transient_faults_converge(bridge_env: BridgeEnv) -> None:
    """503 + Retry-After, 429, timeouts and connections dropped after the server applied the
    request all end with every task created once and in its final state."""
    env = bridge_env
    env.write_config(target="timeout: 500ms")
    fake = env.fake
    fake.add_fault({"method": "PUT", "status": 503, "retry_after": "1", "times": 3})
    fake.add_fault({"method": "PUT", "status": 429, "times": 3})
    fake.add_fault({"method": "PUT", "latency_ms": 1500, "times": 2})
    fake.add_fault({"method": "PUT", "drop_after_apply": True, "times": 3})
    fake.add_fault({"method": "PATCH", "drop_after_apply": True, "times": 2})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    _insert_paid(env, range(1, 21))
    env.sql("UPDATE orders SET status = 'shipped' WHERE id <= 5")
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == 25,
        timeout=60,
        message="25 ops delivered",
    )
    tasks = fake.tasks()
    assert set(tasks) == {fragment_task_uuid(f"order-{i}") for i in range(1, 21)}
    assert sum(t["status"] == "DONE" for t in tasks.values()) == 5
    retries = bridge.events("op.retry")
    assert any(r.get("http_status") == 503 for r in retries)
    assert any(r.get("http_status") == 429 for r in retries)
    assert len(retries) >= 3 + 3 + 2 + 3 + 2
    statuses = [r["status"] for r in fake.ledger()]
    assert statuses.count(503) == 3 and statuses.count(429) == 3
    assert env.outbox_count("status != 'delivered'") == 0


def test_permanent_failure_dead_letters_one_uid_and_retry_redrives(bridge_env: BridgeEnv) -> None:
    """A 400 for one UID (refusing any request that carries it, batches too) kills that op with
    the reason and parks its later ops; the batch is split so other UIDs are delivered;
    `bridge outbox retry` redrives it once the fault is gone."""
    env = bridge_env
    env.write_config()
    bad = fragment_task_uuid("order-3")
    env.fake.add_fault(
        {
            "contains": bad,
            "status": 400,
            "body": {"detail": "fields.title: too long"},
        }
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    _insert_paid(env, range(1, 6))
    env.sql("UPDATE orders SET status = 'shipped' WHERE id IN (3, 4)")
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == 5,
        timeout=30,
        message="the 5 healthy ops delivered",
    )
    wait_until(lambda: env.outbox_count("status = 'parked'") == 1, timeout=30, message="parked")
    dead = env.outbox_rows("status = 'dead'")
    assert len(dead) == 1 and dead[0]["uid"] == "order-3" and dead[0]["op"] == "upsert"
    assert "400" in dead[0]["last_error"] and "too long" in dead[0]["last_error"]
    parked = env.outbox_rows("status = 'parked'")
    assert parked[0]["uid"] == "order-3" and parked[0]["op"] == "close"
    assert bad not in env.fake.tasks()
    assert bridge.events("op.dead")[0]["reason"] == dead[0]["last_error"]
    assert bridge.events("batch.split"), "the 5 upserts went out as one batch, refused whole"

    env.fake.clear_faults()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "task_bridge",
            "outbox",
            "retry",
            dead[0]["op_id"],
            "-c",
            str(env.config_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert dead[0]["op_id"] in out.stdout
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == 7,
        timeout=30,
        message="redriven op and its parked follower delivered",
    )
    assert env.fake.tasks()[bad]["status"] == "DONE"
    methods = [r["method"] for r in env.fake.ledger() if r.get("uid") == bad and r.get("applied")]
    assert methods == ["PUT", "PATCH"]
