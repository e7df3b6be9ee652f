"""Periodic upkeep beside delivery: outbox gauges, the retention purge, each source's lag.

Every `interval` seconds (and once at start): the outbox's op counts per status become the
`task_bridge_outbox_ops` gauge, delivered ops older than `outbox.retention` are purged, and
every source that reports a lag (`Source.lag()`, run in a worker thread: it may query its
server) is logged: `warning` past its threshold, `debug` below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from task_bridge.errors import SourceUnavailable
from task_bridge.observability import Metrics, log
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.sources.base import Source

INTERVAL_S = 30.0


class Upkeep:
    def __init__(
        self,
        outbox: LoopOutbox,
        sources: Sequence[Source],
        metrics: Metrics,
        logger: logging.Logger,
        retention_s: float,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.outbox = outbox
        self.sources = list(sources)
        self.metrics = metrics
        self.log = logger
        self.retention_s = retention_s
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def once(self) -> None:
        for status, n in (await self.outbox.counts()).items():
            self.metrics.outbox.labels(status).set(n)
        purged = await self.outbox.purge(["delivered"], time.time() - self.retention_s)
        if purged:
            log(self.log, logging.INFO, "outbox.purged", ops=purged)
        for source in self.sources:
            try:
                lag = await asyncio.to_thread(source.lag)
            except SourceUnavailable:
                continue  # the source's own reconnects say why
            if lag is not None:
                level = logging.WARNING if lag.bytes > lag.warn_bytes else logging.DEBUG
                log(
                    self.log,
                    level,
                    lag.event,
                    **lag.context,
                    lag_bytes=lag.bytes,
                    threshold_bytes=lag.warn_bytes,
                )
