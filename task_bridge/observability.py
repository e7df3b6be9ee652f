"""Logging (JSON lines per SPEC section 8, secrets redacted) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from task_bridge.redaction import Redactor

LOGGER_NAME = "task_bridge"
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
        self.ready = False


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on a port (`bridge run --metrics-port`)."""

    def __init__(self, metrics: Metrics, port: int, host: str = "127.0.0.1") -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    body, ctype, code = b"ok\n", "text/plain", 200
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
