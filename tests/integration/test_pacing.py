"""Per-target `rate_limit`: the bridge paces itself instead of collecting 429s."""

from __future__ import annotations

from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

RATE = 10  # per second
OPS = 30


def test_rate_limited_target_is_paced_below_its_limit(bridge_env: BridgeEnv) -> None:
    """With rate_limit 10/s and no batching, no 1-second window sees more than 10 (+1) requests."""
    env = bridge_env
    env.write_config(target=f"rate_limit: {RATE}/s\nbatch_size: 1")
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders (id, status, created_at) SELECT g, 'paid', now()"
        f" FROM generate_series(1, {OPS}) g"
    )
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == OPS, timeout=60, message="delivered"
    )
    arrivals = sorted(r["t"] for r in env.fake.ledger())
    assert len(arrivals) == OPS
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= RATE + 1, f"{busiest} requests within one second"
    assert arrivals[-1] - arrivals[0] >= (OPS - RATE - 1) / RATE


def test_upserts_drain_in_batches_without_a_single_429(bridge_env: BridgeEnv) -> None:
    """1,000 upserts to a target limited to 60/min (enforced by the fake) drain through
    PUT /tasks/batch with zero 429s, one task per row, each with its own fields."""
    env = bridge_env
    env.fake.rate_limit_per_min = 60
    env.write_config(target="rate_limit: 60/min")
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    rows = 1000
    env.sql(
        "INSERT INTO orders (id, status, amount, created_at) SELECT g, 'paid', g, now()"
        f" FROM generate_series(1, {rows}) g"
    )
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == rows, timeout=60, message="delivered"
    )
    assert env.fake.rate_limited == 0
    ledger = env.fake.ledger()
    assert all(r["status"] == 200 for r in ledger)
    batches = [r for r in ledger if r["path"] == "/tasks/batch"]
    assert batches and len(ledger) <= rows // 100 + 5, f"{len(ledger)} requests"
    tasks = env.fake.tasks()
    assert len(tasks) == rows
    assert sorted(t["fields"]["amount"] for t in tasks.values()) == sorted(
        f"{n}.00" for n in range(1, rows + 1)
    )
