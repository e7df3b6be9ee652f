"""Postgres -> rules -> outbox -> fake Fragment, end to end, on real parts."""

from __future__ import annotations

import json
import subprocess
import sys

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import TOKEN, BridgeEnv
from tests.support.wait import wait_until


def _task(env: BridgeEnv, uid: str) -> dict | None:
    return env.fake.tasks().get(fragment_task_uuid(uid))


def test_insert_update_delete_drive_typed_tasks(bridge_env: BridgeEnv) -> None:
    """Row changes give exactly the expected tasks: typed fields, due dates and closes."""
    env = bridge_env
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders VALUES (1, 'paid', 12.50, '2026-01-02 03:04:05+00', 'Ada',"
        ' \'{vip,eu}\', \'{"channel": "web", "n": [1, 2]}\','
        " 'a8098c1a-f86e-11da-bd1a-00112444be1e', NULL)",
        "INSERT INTO orders VALUES (2, 'new', 99999999.99, '2026-03-01 00:00:00+02', 'Bob',"
        " '{}', NULL, NULL, 'x')",
        "INSERT INTO orders VALUES (3, 'paid', 0.01, '2026-06-30 23:59:59+00', NULL, NULL,"
        " '[]', NULL, NULL)",
        "UPDATE orders SET status = 'paid' WHERE id = 2",
        "UPDATE orders SET status = 'shipped' WHERE id = 1",
        "DELETE FROM orders WHERE id = 3",
    )
    wait_until(
        lambda: (
            len(env.fake.tasks()) == 3
            and sum(t["status"] == "DONE" for t in env.fake.tasks().values()) == 2
        ),
        timeout=30,
        message="3 tasks, 2 closed",
    )

    one = _task(env, "order-1")
    assert one is not None and one["status"] == "DONE"
    assert one["due_at"] == "2026-01-03T03:04:05+00:00"
    assert one["fields"] == {
        "title": "Review order #1",
        "amount": "12.50",
        "created_at": "2026-01-02T03:04:05+00:00",
        "customer": "Ada",
        "tags": ["vip", "eu"],
        "meta": {"channel": "web", "n": [1, 2]},
        "ref": "a8098c1a-f86e-11da-bd1a-00112444be1e",
        "note": None,
    }
    two = _task(env, "order-2")
    assert two is not None and two["status"] == "TODO"
    assert two["fields"]["amount"] == "99999999.99"
    assert two["fields"]["created_at"] == "2026-02-28T22:00:00+00:00"
    assert two["fields"]["tags"] == [] and two["fields"]["meta"] is None
    assert two["due_at"] == "2026-03-01T22:00:00+00:00"
    three = _task(env, "order-3")
    assert three is not None and three["status"] == "DONE"
    assert three["fields"]["tags"] is None and three["fields"]["meta"] == []

    ledger = env.fake.ledger()
    assert {(r["method"], r["status"]) for r in ledger} <= {("PUT", 200), ("PATCH", 200)}
    assert all(r["headers"].get("authorization") == "Bearer ***" for r in ledger)
    assert all(r["headers"].get("user-agent", "").startswith("task-bridge/") for r in ledger)
    assert TOKEN not in bridge.log_text()
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 5, message="5 ops delivered")
    assert env.outbox_count("status != 'delivered'") == 0


def test_dry_run_prints_operations_without_sending(bridge_env: BridgeEnv) -> None:
    """`bridge dry-run` renders the operations for one event as JSON and sends nothing."""
    env = bridge_env
    config = env.write_config()
    event = {
        "op": "update",
        "table": "public.orders",
        "before": {"id": 7, "status": "paid"},
        "after": {"id": 7, "status": "shipped"},
    }
    out = subprocess.run(
        [sys.executable, "-m", "task_bridge", "dry-run", "-c", str(config), "--event", "-"],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        check=True,
    )
    ops = json.loads(out.stdout)
    assert [(o["rule"], o["op"], o["uid"]) for o in ops] == [("close", "close", "order-7")]
    assert env.fake.ledger() == []
    assert TOKEN not in out.stdout + out.stderr
