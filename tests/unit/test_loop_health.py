"""The loop monitor and /healthz: the timer's runs are counted as lag samples and heartbeats;
/healthz answers 503 naming the stall once the loop has not run the timer for a while."""

from __future__ import annotations

import asyncio
import time

import httpx

from task_bridge.observability import LoopMonitor, Metrics, MetricsServer
from task_bridge.testing.postgres import free_port
from tests.support.wait import wait_until

LAG = "task_bridge_event_loop_lag_seconds_count"


def test_healthz_follows_the_loop_timer() -> None:
    metrics = Metrics()
    server = MetricsServer(metrics, free_port(), stall_after=0.5)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{base}/healthz").text == "ok\n", "healthy before the loop starts"

        async def run_monitor() -> None:
            monitor = LoopMonitor(metrics, interval=0.01)
            monitor.start()
            deadline = time.monotonic() + 30
            while (metrics.registry.get_sample_value(LAG) or 0) < 3:
                assert time.monotonic() < deadline, "the timer never ran"
                await asyncio.sleep(0.01)
            assert httpx.get(f"{base}/healthz").status_code == 200  # (from the loop: no await)
            monitor.stop()

        asyncio.run(run_monitor())
        # the loop has gone: no more heartbeats
        response = wait_until(
            lambda: (r := httpx.get(f"{base}/healthz")).status_code == 503 and r,
            message="healthz to report the stalled loop",
        )
        assert response and response.text.startswith("event loop stalled: no tick for ")
    finally:
        server.stop()
