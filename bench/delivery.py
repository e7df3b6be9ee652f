"""Delivery rate: the bridge's delivery loop vs a bare httpx.AsyncClient loop, same requests
(batching off, one PUT per op); and the bridge with Fragment batching on, for reference."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bench.fakeproc import TOKEN, FakeProcess
from task_bridge.delivery import Delivery
from task_bridge.events import SourcePosition
from task_bridge.jsonenc import dumps_payload
from task_bridge.observability import Metrics
from task_bridge.operations import Operation
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.retry import RetryPolicy
from task_bridge.rules.chains import ChainRenderer
from task_bridge.targets.base import TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget, fragment_task_uuid


def _payload(i: int) -> dict[str, object]:
    return {"fields": {"title": f"Bench row {i}", "amount": f"{i}.00"}}


async def _bridge(
    fake: FakeProcess, outbox: LoopOutbox, n: int, concurrency: int, batch_size: int
) -> float:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    config = FragmentConfig(
        kind="fragment", base_url=fake.url, token=SecretStr(TOKEN), batch_size=batch_size
    )
    logger = logging.getLogger("bench")
    metrics = Metrics()
    delivery = Delivery(
        outbox,
        {"fragment": FragmentTarget("fragment", config, TargetDeps.of(client))},
        RetryPolicy(),
        concurrency=concurrency,
        rate_limits={},
        logger=logger,
        metrics=metrics,
        chains=ChainRenderer(),
    )
    stop = asyncio.Event()
    labels = {"target": "fragment"}

    async def watch() -> None:
        # the delivery counter, not an outbox query: the watch must not load the loop measured
        while (
            metrics.registry.get_sample_value("task_bridge_ops_delivered_total", labels) or 0
        ) < n:
            await asyncio.sleep(0.02)
        stop.set()

    started = time.perf_counter()
    await asyncio.gather(delivery.run(stop), watch())
    elapsed = time.perf_counter() - started
    await client.aclose()
    await outbox.aclose()
    return n / elapsed


async def _bare(fake: FakeProcess, n: int, concurrency: int) -> float:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "User-Agent": "bench",
    }
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            uid = fragment_task_uuid(f"bare-{i}")
            response = await client.put(
                f"{fake.url}/tasks/{uid}", headers=headers, content=dumps_payload(_payload(i))
            )
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return n / elapsed


def _bridge_rate(fake: FakeProcess, n: int, concurrency: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        outbox = SqliteOutbox(str(Path(tmp) / "outbox.db"))
        ops = [
            Operation(
                f"op{i:08d}",
                "fragment",
                "upsert",
                f"bench-{i}",
                "bench",
                0,
                SourcePosition("postgres", lsn=i + 1, index=0),
                _payload(i),
            )
            for i in range(n)
        ]
        outbox.put(ops, "bench", None, time.time())
        outbox.close()
        box = LoopOutbox(SqliteOutbox(str(Path(tmp) / "outbox.db")))
        return asyncio.run(_bridge(fake, box, n, concurrency, batch_size))


def delivery_rates(fake: FakeProcess, n: int, concurrency: int) -> tuple[float, float, float]:
    """(bridge ops/s, bare httpx ops/s, bridge ops/s with batching) for `n` upserts."""
    single = _bridge_rate(fake, n, concurrency, batch_size=1)
    bare = asyncio.run(_bare(fake, n, concurrency))
    batched = _bridge_rate(fake, n, concurrency, batch_size=100)
    return single, bare, batched
