"""The event loop never blocks on the database (issue 13, acceptance d).

Another connection holds the SQLite outbox's write lock (`BEGIN IMMEDIATE`) while the bridge
has requests in flight and jobs queued. Nothing can be committed meanwhile, yet the bridge's
event loop goes on: requests come back, the queued jobs go out, its timer keeps ticking and
`/healthz` answers 200. Once the lock is released, everything is delivered.

On a bridge whose delivery calls the outbox on the loop, the first commit after the requests
come back blocks the loop until the lock is released: the timer stops (and the hold would end
the bridge with exit 2 after SQLite's 30 s busy timeout).
"""

from __future__ import annotations

import sqlite3
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from task_bridge.targets.fragment import fragment_task_uuid
from task_bridge.testing.postgres import free_port
from tests.integration.conftest import BridgeEnv
from tests.support.bridge_proc import BridgeProcess
from tests.support.wait import wait_until

RULE = """
rules:
  - name: review
    table: public.orders
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task: {fields: {title: "Review order #{{ after.id }}"}}
"""
CONCURRENCY = 4
OPS = 2 * CONCURRENCY  # CONCURRENCY sent at once, as many claimed ahead into the queue
SLOW_MS = 3000  # the first wave's requests: in flight while the lock is taken
HOLD_S = 2.0  # at least; longer until what the test waits for has happened
TICKS = 5  # of the loop monitor's timer (every 50 ms) while nothing can be committed


def _loop_ticks(base: str) -> float:
    """How many times the bridge's event loop has run its monitor's timer."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "task_bridge_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    return sample.value
    raise AssertionError("no task_bridge_event_loop_lag_seconds in /metrics")


def test_loop_serves_and_sends_while_another_connection_holds_the_outbox_write_lock(
    bridge_env: BridgeEnv,
) -> None:
    env = bridge_env
    env.write_config(rules=RULE, concurrency=CONCURRENCY, target="batch_size: 1")
    # the first wave is slow on purpose: no request timeout while it is at the fake
    env.config_path.write_text(env.config_path.read_text().replace("timeout: 2s", "timeout: 30s"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bridge = BridgeProcess(
        env.config_path, env.workdir / "bridge.log", ["--metrics-port", str(port)]
    )
    env.processes.append(bridge)
    env.fake.add_fault({"method": "PUT", "latency_ms": SLOW_MS, "times": CONCURRENCY})
    bridge.start()
    bridge.wait_for_log("source.started")

    env.sql(f"INSERT INTO orders (id, status) SELECT g, 'paid' FROM generate_series(1, {OPS}) g")
    wait_until(
        lambda: env.outbox_count("status = 'inflight'") == OPS and env.fake.inflight == CONCURRENCY,
        message=f"{CONCURRENCY} requests at the fake and {CONCURRENCY} more claimed ahead",
    )

    lock = sqlite3.connect(env.workdir / "outbox.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        held_at, held_until = time.time(), time.monotonic() + HOLD_S

        def sent_since_hold() -> int:
            return sum(1 for r in env.fake.ledger() if r["method"] == "PUT" and r["t"] >= held_at)

        # the first wave comes back and the queued jobs go out, with nothing committed
        wait_until(
            lambda: sent_since_hold() >= CONCURRENCY,
            timeout=25,
            message="the queued jobs sent while the outbox is locked",
        )
        assert env.outbox_count("status = 'delivered'") == 0, "the lock holds every commit back"
        # the loop is not stuck waiting for the outbox
        ticks = _loop_ticks(base)
        wait_until(
            lambda: _loop_ticks(base) >= ticks + TICKS,
            timeout=25,
            message="the event loop's timer ticking while the outbox is locked",
        )

        def healthy_for_the_hold() -> bool:
            response = httpx.get(f"{base}/healthz", timeout=10)
            assert response.status_code == 200, response.text
            return time.monotonic() >= held_until

        wait_until(healthy_for_the_hold, timeout=25, interval=0.1, message="the hold")
        assert env.outbox_count("status = 'delivered'") == 0
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()

    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == OPS,
        timeout=60,
        message="everything delivered after the lock is released",
    )
    tasks = env.fake.tasks()
    assert all(fragment_task_uuid(f"order-{i}") in tasks for i in range(1, OPS + 1))
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    assert bridge.terminate() == 0
