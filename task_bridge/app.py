"""Composition root: config -> source, rules, outbox, targets, ingest, delivery. No globals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from task_bridge.config import BridgeConfig, LoadedConfig
from task_bridge.delivery import Delivery
from task_bridge.errors import BridgeError, exit_code
from task_bridge.events import parse_lsn
from task_bridge.ingest import Ingest
from task_bridge.observability import LoopMonitor, Metrics, MetricsServer, log
from task_bridge.outbox import open_outbox
from task_bridge.outbox.base import Outbox
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.redaction import Redactor, secret_values
from task_bridge.retry import RetryPolicy
from task_bridge.rules.chains import ChainRenderer
from task_bridge.rules.engine import RuleEngine
from task_bridge.rules.loader import RuleSet, load_rules
from task_bridge.sources.base import Source
from task_bridge.sources.postgres.source import PostgresSource
from task_bridge.targets import build_target, target_sources
from task_bridge.targets.base import Target, TargetDeps
from task_bridge.targets.humanlambdas_poller import SCHEMA as TASK_API_SCHEMA
from task_bridge.templating import Templates
from task_bridge.upkeep import Upkeep

GC_THRESHOLDS = (10_000, 10, 10)  # gen0 700 -> 10k; 50k was as fast but kept ~30 MB more garbage
SWITCH_INTERVAL_S = 0.0005  # Python's default: 5 ms
RECLAIM_INTERVAL_S = 3.0  # how soon a bridge takes over a dead one's inflight ops
TAKEOVER_MARGIN_S = 2.0
"""How long, besides a request's timeout, a bridge whose outbox connection is cut may go on
sending before it finds out (its delivery loop touches the outbox at least once a second)."""


def build_targets(config: BridgeConfig, deps: TargetDeps) -> dict[str, Target]:
    """Every configured target, built by its kind's factory."""
    return {name: build_target(name, cfg, deps) for name, cfg in config.targets.items()}


def load_ruleset(loaded: LoadedConfig, templates: Templates | None = None) -> RuleSet:
    """The rules, checked against the configured targets' models (no network, no loop)."""
    return load_rules(
        loaded.config.rules,
        base_dir=loaded.base_dir,
        config_file=str(loaded.path),
        config_doc=loaded.doc,
        targets=loaded.config.targets,
        templates=templates or Templates(loaded.config.limits.budget()),
    )


def build_sources(config: BridgeConfig, ruleset: RuleSet, logger: logging.Logger) -> list[Source]:
    """The change source (Postgres: publishing the rules' tables; or Kafka), plus the sources
    targets feed back (one poller per Human Lambdas queue whose completed tasks are events)."""
    pg, kafka = config.source.postgres, config.source.kafka
    sources: list[Source] = []
    if pg is not None:
        tables = [t for t in ruleset.tables() if not t.startswith(f"{TASK_API_SCHEMA}.")]
        sources.append(
            PostgresSource(
                pg.dsn.get_secret_value(),
                pg.slot,
                pg.publication,
                tables,
                status_interval=pg.status_interval,
                logger=logger,
                lag_warn_bytes=pg.lag_warn_bytes,
            )
        )
    if kafka is not None:
        from task_bridge.sources.kafka import KafkaSource  # kafka-python is heavy to import

        sources.append(KafkaSource(kafka, logger))
    for name, cfg in config.targets.items():
        sources += target_sources(name, cfg, logger)
    return sources


def _loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tune_gc() -> None:
    """Fewer garbage-collector passes. Ingest makes a score of short-lived objects per change;
    with Python's default threshold (700 allocations) the collector ran every few dozen
    changes and walked the batches in flight each time (`make bench`: ingest about 10% faster
    with this). `gc.freeze()` leaves the objects made at startup (modules, compiled rules)
    out of every pass. Reference cycles are still collected, only in bigger steps."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_threads() -> None:
    """Shorter turns on the GIL. Ingest's thread computes in Python without pause; a thread
    that wakes up (the event loop after its select, the loop's outbox thread after a
    statement) waits for it to hand the GIL over, by default up to 5 ms. A settle crosses
    threads twice and each outbox statement waits once. 10 s runs at 2k changes/s on a shared
    2-core machine (noisy): event-loop lag p99 about 40 ms with 5 ms turns, 6 ms with 0.5 ms
    turns, and the delivery latency tail followed."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def tune_process() -> None:
    """What `task-bridge run` tunes once startup's objects exist (they are frozen): the
    garbage collector and the threads' turns on the GIL. Process-wide: not `App`'s to do."""
    tune_gc()
    tune_threads()


def open_configured_outbox(
    loaded: LoadedConfig, write_lock: threading.Lock | None = None
) -> Outbox:
    config = loaded.config
    url = config.outbox.url.get_secret_value()
    return open_outbox(url, loaded.base_dir, write_lock, takeover_hold(config))


def takeover_hold(config: BridgeConfig) -> float:
    """Seconds the ops a dead claimer of a shared outbox had in flight wait before another
    bridge sends them: the longest request timeout and the time a bridge cut off from the
    outbox takes to stop (see `outbox.postgres`)."""
    timeouts = [t.timeout for t in config.targets.values() if t.timeout is not None]
    return max([config.delivery.timeout, *timeouts]) + TAKEOVER_MARGIN_S


def make_client(config: BridgeConfig) -> httpx.AsyncClient:
    n = config.delivery.concurrency
    return httpx.AsyncClient(
        timeout=config.delivery.timeout,
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
    )


@dataclass
class _Shared:
    """State the ingest thread and the event loop share."""

    stop_thread: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class App:
    """The bridge, wired from its config. `run()` blocks until `stop()` (from any thread, e.g.
    a signal handler) or a fatal error, and returns the exit code; nothing process-wide
    (signals, GC tuning) is touched here, so an `App` can be embedded."""

    def __init__(
        self,
        loaded: LoadedConfig,
        logger: logging.Logger,
        after_start: Callable[[], None] | None = None,
    ) -> None:
        """`after_start`: called once every startup object exists, before the first change
        is read (`cmd_run` tunes the garbage collector there)."""
        self.loaded = loaded
        self.config = loaded.config
        self.log = logger
        self.metrics = Metrics()
        self.outbox_lock = threading.Lock()  # ingest and delivery queue their writes on it
        self.after_start = after_start
        self._stop_requested = threading.Event()
        self._wake_loop: Callable[[], None] = lambda: None

    def run(self, metrics_port: int | None = None) -> int:
        return asyncio.run(self._main(metrics_port))

    def stop(self, reason: str = "stop") -> None:
        """Ask a running (or starting) bridge to stop; safe from any thread."""
        if not self._stop_requested.is_set():
            log(self.log, logging.INFO, "shutdown.requested", signal=reason)
        self._stop_requested.set()
        self._wake_loop()

    async def _main(self, metrics_port: int | None) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        shared = _Shared()

        def request_stop() -> None:
            shared.stop_thread.set()
            stop.set()

        def wake() -> None:
            loop.call_soon_threadsafe(request_stop)

        self._wake_loop = wake
        if self._stop_requested.is_set():
            request_stop()

        client = make_client(self.config)
        # Everything the loop asks of the outbox (delivery, targets' store, upkeep) runs on
        # this one's own thread.
        outbox = LoopOutbox(open_configured_outbox(self.loaded, self.outbox_lock))
        monitor = LoopMonitor(self.metrics)
        monitor.start()
        server = MetricsServer(self.metrics, metrics_port) if metrics_port is not None else None
        try:
            templates = Templates(self.config.limits.budget())  # one for rules, chains, targets
            targets = build_targets(self.config, TargetDeps(client, outbox, self.log, templates))
            engine = RuleEngine(load_ruleset(self.loaded, templates))
            reset = await outbox.reset_inflight()
            if reset:
                log(self.log, logging.INFO, "outbox.recovered", inflight_reset=reset)
            retry = self.config.delivery.retry
            delivery = Delivery(
                outbox,
                targets,
                RetryPolicy(
                    retry.max_attempts, retry.initial_backoff, retry.max_backoff, retry.max_age
                ),
                concurrency=self.config.delivery.concurrency,
                rate_limits={
                    n: t.rate_limit for n, t in self.config.targets.items() if t.rate_limit
                },
                logger=self.log,
                metrics=self.metrics,
                shutdown_grace=self.config.delivery.shutdown_grace,
                redact=Redactor(self.loaded.secrets()),
                chains=ChainRenderer(templates),
            )
            self._warn_plain_http()
            if self.after_start is not None:
                self.after_start()
            sources = build_sources(self.config, engine.ruleset, self.log)
            threads = [
                threading.Thread(
                    target=self._ingest_thread,
                    name=f"ingest-{source.name}",
                    args=(
                        source,
                        engine,
                        delivery,
                        shared,
                        lambda: loop.call_soon_threadsafe(stop.set),
                    ),
                )
                for source in sources
            ]
            if server is not None:
                server.start()
                log(self.log, logging.INFO, "metrics.listening", port=server.port)
            for thread in threads:
                thread.start()
            self.metrics.ready = True
            upkeep = Upkeep(outbox, sources, self.metrics, self.log, self.config.outbox.retention)
            chores = [
                asyncio.create_task(self._guard(upkeep.run(stop), shared, stop)),
                asyncio.create_task(
                    self._guard(self._reclaim(outbox, delivery, stop), shared, stop)
                ),
            ]
            try:
                await self._guard(delivery.run(stop), shared, stop)
            finally:
                shared.stop_thread.set()
                for thread in threads:
                    await asyncio.to_thread(thread.join)
                for chore in chores:
                    chore.cancel()
        finally:
            self._wake_loop = lambda: None
            self.metrics.ready = False
            await client.aclose()
            await outbox.aclose()
            monitor.stop()
            if server is not None:
                server.stop()
        return self._exit_code(shared.error)

    def _warn_plain_http(self) -> None:
        """Credentials sent over plain HTTP to another host can be read on the way."""
        for name, target in self.config.targets.items():
            url = urlsplit(target.base_url)
            if url.scheme == "http" and not _loopback(url.hostname) and any(secret_values(target)):
                log(
                    self.log,
                    logging.WARNING,
                    "target.insecure",
                    target=name,
                    base_url=target.base_url,
                    reason="credentials are sent over plain HTTP to a non-loopback host;"
                    " use https://",
                )

    async def _guard(
        self, work: Coroutine[Any, Any, None], shared: _Shared, stop: asyncio.Event
    ) -> None:
        """Run `work` on the loop; if it fails (e.g. the outbox connection is lost), the bridge
        stops with that error as its exit reason (the first one wins)."""
        try:
            await work
        except Exception as exc:
            if not isinstance(exc, BridgeError):
                self.log.exception("loop.crashed")
            if shared.error is None:
                shared.error = exc
            shared.stop_thread.set()
            stop.set()

    def _exit_code(self, error: BaseException | None) -> int:
        code = exit_code(error)
        if error is None:
            log(self.log, logging.INFO, "shutdown", exit_code=code)
        else:
            log(self.log, logging.ERROR, "shutdown", exit_code=code, error=str(error))
        return code

    def _ingest_thread(
        self,
        source: Source,
        engine: RuleEngine,
        delivery: Delivery,
        shared: _Shared,
        stop_loop: Any,
    ) -> None:
        outbox = open_configured_outbox(self.loaded, self.outbox_lock)
        ingest = Ingest(
            source,
            engine,
            outbox,
            logger=self.log,
            metrics=self.metrics,
            on_enqueued=delivery.wake,
            checkpoint_position=parse_lsn if isinstance(source, PostgresSource) else None,
        )
        try:
            ingest.run(shared.stop_thread)
        except BaseException as exc:
            shared.error = exc
            if not isinstance(exc, BridgeError):
                self.log.exception("ingest.crashed", extra={"ctx": {"source": source.name}})
        finally:
            outbox.close()
            stop_loop()

    async def _reclaim(self, outbox: LoopOutbox, delivery: Delivery, stop: asyncio.Event) -> None:
        """Take over the inflight ops of bridges that died while sharing this outbox."""
        while not stop.is_set():
            reclaimed = await outbox.reclaim_orphans()
            if reclaimed:
                log(self.log, logging.INFO, "outbox.reclaimed", inflight_of_dead_bridges=reclaimed)
                delivery.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECLAIM_INTERVAL_S)
