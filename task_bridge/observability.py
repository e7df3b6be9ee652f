"""Logging (JSON lines per SPEC section 8, secrets redacted) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from task_bridge.redaction import Redactor

LOGGER_NAME = "task_bridge"
LOOP_TICK_S = 0.05
"""How often the loop monitor's timer is due."""
LOOP_STALL_S = 10.0
"""/healthz answers 503 when the event loop has not run its timer for this long."""
LOOP_LAG_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, float("inf"),
)  # fmt: skip
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "ctx",
}


def log(logger: logging.Logger, level: int, event: str, **ctx: Any) -> None:
    """Log one lifecycle event with context fields (`rule`, `uid`, `op_id`, ...)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"ctx": ctx})


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        out.update(getattr(record, "ctx", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        ctx = " ".join(f"{k}={v}" for k, v in (getattr(record, "ctx", None) or {}).items())
        line = f"{ts} {record.levelname.lower():7} {record.getMessage()} {ctx}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


def setup_logging(
    fmt: str = "json", level: str = "info", secrets: Iterable[str] = ()
) -> logging.Logger:
    """Configure the `task_bridge` logger (called by the CLI only, never at import)."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


class Metrics:
    """The bridge's Prometheus metrics, on a registry of its own (no process globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "task_bridge_events_total", "Change events read", ["table"], registry=r
        )
        self.enqueued = Counter("task_bridge_ops_enqueued_total", "Operations enqueued", registry=r)
        self.delivered = Counter(
            "task_bridge_ops_delivered_total", "Operations delivered", ["target"], registry=r
        )
        self.retries = Counter(
            "task_bridge_op_retries_total", "Delivery retries", ["target"], registry=r
        )
        self.dead = Counter(
            "task_bridge_ops_dead_total", "Operations dead-lettered", ["target"], registry=r
        )
        self.latency = Histogram(
            "task_bridge_delivery_seconds", "Delivery request latency", ["target"], registry=r
        )
        self.outbox = Gauge(
            "task_bridge_outbox_ops", "Outbox operations by status", ["status"], registry=r
        )
        self.checkpoint_lsn = Gauge(
            "task_bridge_checkpoint_position",
            "The Postgres source's last stored checkpoint, as an LSN number"
            " (unset for Kafka: its checkpoint is an offset per partition)",
            registry=r,
        )
        self.loop_lag = Histogram(
            "task_bridge_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.heartbeat = Heartbeat()
        self.ready = False


class Heartbeat:
    """When the event loop last ran its monitor's timer; /healthz reads it from its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: float | None = None

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def silent_for(self) -> float | None:
        """Seconds since the last beat; None before the first."""
        with self._lock:
            last = self._last
        return None if last is None else time.monotonic() - last


class LoopMonitor:
    """A timer on the event loop, due every `interval`: how late it runs is the loop's lag
    (anything that holds the loop, a blocking call or a long callback, shows up in it), and
    each run is a heartbeat /healthz checks. The next one is due `interval` after a run, so a
    stall counts once, with its length."""

    def __init__(self, metrics: Metrics, interval: float = LOOP_TICK_S) -> None:
        self.metrics = metrics
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """On the running loop."""
        self._loop = asyncio.get_running_loop()
        self.metrics.heartbeat.beat()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.metrics.loop_lag.observe(max(0.0, now - self._due))
        self.metrics.heartbeat.beat()
        self._schedule(now)


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on a port (`bridge run --metrics-port`)."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        host: str = "127.0.0.1",
        stall_after: float = LOOP_STALL_S,
    ) -> None:
        """/healthz: 200 while the event loop runs its monitor's timer (or before it starts),
        503 naming the stall once it has not for `stall_after` seconds."""
        registry = metrics.registry

        def health() -> tuple[int, bytes]:
            silent = metrics.heartbeat.silent_for()
            if silent is not None and silent > stall_after:
                return 503, f"event loop stalled: no tick for {silent:.1f} s\n".encode()
            return 200, b"ok\n"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    (code, body), ctype = health(), "text/plain"
                elif self.path == "/readyz":
                    code = 200 if metrics.ready else 503
                    body, ctype = (b"ready\n" if metrics.ready else b"starting\n"), "text/plain"
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
