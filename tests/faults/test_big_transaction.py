"""A 100k-row transaction while the API is down: memory stays bounded, all delivered later."""

from __future__ import annotations

import threading

from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

ROWS = 100_000
EVERY = 10  # one task per 10 rows keeps delivery time in the suite reasonable
RSS_LIMIT_MB = 150  # SPEC G6; the measured figure is printed for the closing note
RULES = """
rules:
  - name: review
    table: public.orders
    on: [insert]
    when: after.id % 10 == 0
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task: {fields: {title: "Review {{ after.id }}", note: "{{ after.note }}"}}
"""


def test_big_transaction_while_api_down_is_bounded_and_delivered(bridge_env: BridgeEnv) -> None:
    """100k row changes in one transaction with the API answering 503: operations pile up on
    disk, the process's RSS stays bounded, and every one is delivered once the API is back."""
    env = bridge_env
    env.write_config(rules=RULES, concurrency=32, retry="max_attempts: 1000")
    env.fake.add_fault({"status": 503})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    baseline_mb = bridge.sample_rss() / 2**20

    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.05):
            bridge.sample_rss()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        env.sql(
            "INSERT INTO orders (id, status, amount, created_at, note)"
            " SELECT g, 'paid', g, '2026-01-01T00:00:00Z', repeat('x', 200)"
            f" FROM generate_series(1, {ROWS}) g"
        )
        wait_until(
            lambda: env.outbox_count() == ROWS // EVERY,
            timeout=180,
            interval=0.5,
            message="all ops in the outbox",
        )
        env.fake.clear_faults()
        wait_until(
            lambda: env.outbox_count("status = 'delivered'") == ROWS // EVERY,
            timeout=240,
            interval=0.5,
            message="all ops delivered",
        )
    finally:
        stop_sampling.set()
        sampler.join()
    peak_mb = bridge.peak_rss / 2**20
    print(
        f"\nRSS baseline {baseline_mb:.1f} MB, peak {peak_mb:.1f} MB over a {ROWS}-row transaction"
    )
    assert len(env.fake.tasks()) == ROWS // EVERY
    assert bridge.events("target.paused"), "the breaker held back the down API"
    assert peak_mb < RSS_LIMIT_MB
    assert peak_mb - baseline_mb < 80, "memory must not grow with the transaction size"
