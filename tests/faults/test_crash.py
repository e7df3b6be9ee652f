"""kill -9 of the bridge during ingest and during delivery loses nothing and duplicates nothing."""

from __future__ import annotations

from collections import defaultdict

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

ROWS = 30_000
PER_TX = 1_000


def _workload(env: BridgeEnv) -> None:
    for start in range(1, ROWS + 1, PER_TX):
        env.sql(
            "INSERT INTO orders (id, status, amount, created_at)"
            " SELECT g, CASE WHEN g % 10 = 0 THEN 'paid' ELSE 'new' END, g / 100.0,"
            " '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 second'"
            f" FROM generate_series({start}, {start + PER_TX - 1}) g"
        )
    env.sql("UPDATE orders SET status = 'shipped' WHERE id % 20 = 0")


def test_kill_9_during_ingest_and_delivery_converges_exactly(bridge_env: BridgeEnv) -> None:
    """After two kill -9s (mid-ingest, mid-delivery) every task exists once, none extra, and no
    UID sees a create after its close."""
    env = bridge_env
    expected_tasks = ROWS // 10
    expected_closed = ROWS // 20
    expected_ops = expected_tasks + expected_closed
    env.fake.add_fault({"latency_ms": 5})

    # Create slot and publication first, so the workload lands in the slot.
    first = env.bridge().start()
    first.wait_for_log("source.started")
    first.terminate()
    _workload(env)

    # 1. kill -9 while the backlog is being ingested
    ingesting = env.bridge().start()
    at_kill = wait_until(lambda: env.outbox_count(), timeout=60, message="ingest to start")
    ingesting.kill9()
    assert at_kill < expected_ops, "the kill should land mid-ingest"

    # 2. kill -9 while operations are being delivered
    delivering = env.bridge().start()
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") > 500,
        timeout=120,
        message="delivery to get going",
    )
    delivering.kill9()
    assert env.outbox_count("status = 'delivered'") < expected_ops, "kill should land mid-delivery"

    # 3. restart and let it converge
    final = env.bridge().start()
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == expected_ops,
        timeout=240,
        interval=0.5,
        message="every operation delivered",
    )
    final.terminate()

    assert env.outbox_count() == expected_ops, "no operation enqueued twice"
    tasks = env.fake.tasks()
    assert len(tasks) == expected_tasks
    expected_uuids = {fragment_task_uuid(f"order-{i}") for i in range(10, ROWS + 1, 10)}
    assert set(tasks) == expected_uuids
    closed = {uid for uid, t in tasks.items() if t["status"] == "DONE"}
    assert closed == {fragment_task_uuid(f"order-{i}") for i in range(20, ROWS + 1, 20)}

    history: dict[str, list[str]] = defaultdict(list)
    for request in env.fake.ledger():
        if request.get("applied"):
            history[request["uid"]].append(request["method"])
    for uid, methods in history.items():
        if "PATCH" in methods:
            first_close = methods.index("PATCH")
            assert "PUT" not in methods[first_close:], f"create after close for {uid}: {methods}"
