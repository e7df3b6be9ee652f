"""Per-target `rate_limit`: the bridge paces itself instead of collecting 429s."""

from __future__ import annotations

from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

RATE = 10  # per second
OPS = 30


def test_rate_limited_target_is_paced_below_its_limit(bridge_env: BridgeEnv) -> None:
    """With rate_limit 10/s, no 1-second window at the fake sees more than 10 (+1) requests."""
    env = bridge_env
    env.write_config(target=f"rate_limit: {RATE}/s")
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
