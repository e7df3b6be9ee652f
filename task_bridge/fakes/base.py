"""Shared machinery of the fake task APIs: a real HTTP server, a request ledger, fault injection.

A fake is a `FakeApi` subclass implementing `route()`. Faults are matched in order against each
request; a fault may delay it, answer a status instead of applying it, or apply it and drop the
connection without answering (the ambiguous case clients must survive). Every request is recorded
in the ledger with its arrival time, the client's TCP port, what was answered, whether it was
applied and when it was done.
"""

from __future__ import annotations

import functools
import json
import random
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JsonBody = Any


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: JsonBody
    peer: int | None = None
    """The client's TCP port (which connection, hence which client process, sent it)."""


@dataclass
class Response:
    status: int
    body: JsonBody = None
    headers: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    uid: str | None = None


@dataclass
class Fault:
    method: str | None = None
    path_regex: str | None = None
    contains: str | None = None
    """Match only requests whose path or JSON body contains this string (one task's uid)."""
    status: int | None = None
    retry_after: str | None = None
    latency_ms: int = 0
    drop_after_apply: bool = False
    drop_before_apply: bool = False
    times: int | None = None
    body: JsonBody = None
    probability: float = 1.0
    """The share of matching requests it hits (drawn from the fake's seeded `rng`)."""
    echo_headers: bool = False
    """With `status`: the error body echoes the request's headers, unmasked (as some gateways
    do), for testing that the bridge keeps credentials out of what it stores."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(known)}")
        fault = cls(**data)
        if fault.retry_after is not None:
            fault.retry_after = str(fault.retry_after)
        return fault

    def matches(self, method: str, path: str, body: JsonBody = None) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.contains is not None and (
            self.contains not in path and self.contains not in json.dumps(body)
        ):
            return False
        return self.path_regex is None or re.search(self.path_regex, path) is not None


class FakeApi:
    """Base of every fake: subclasses implement `route(request) -> Response`."""

    prefix = ""

    def __init__(self, token: str = "test-token", rate_limit_per_min: int | None = None) -> None:
        self.token = token
        self.rate_limit_per_min = rate_limit_per_min
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._ledger: list[dict[str, Any]] = []
        self._recent: deque[float] = deque()
        self.rate_limited = 0
        self.inflight = 0
        self.rng = random.Random(0)
        """Draws for faults with a `probability` (seed it for a reproducible run)."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- subclass hooks ------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        raise NotImplementedError

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def mask_headers(self, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        if "authorization" in out:
            scheme = out["authorization"].split(" ", 1)[0]
            out["authorization"] = f"{scheme} ***"
        return out

    def reset_state(self) -> None:
        """Forget the API's data (subclasses extend)."""

    def admin(self, method: str, action: str, body: JsonBody) -> Response | None:
        """Extra `/_admin/<action>` endpoints of a fake (None: no such action)."""
        return None

    # -- faults and ledger (thread-safe) -------------------------------------------------------

    def add_fault(self, fault: dict[str, Any] | Fault) -> None:
        with self.lock:
            self._faults.append(fault if isinstance(fault, Fault) else Fault.from_dict(fault))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def ledger(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self._ledger]

    def ledger_size(self) -> int:
        with self.lock:
            return len(self._ledger)

    def reset(self) -> None:
        with self.lock:
            self._faults.clear()
            self._ledger.clear()
            self._recent.clear()
            self.rate_limited = 0
            self.reset_state()

    def _take_fault(self, method: str, path: str, body: JsonBody = None) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.matches(method, path, body):
                    if fault.probability < 1.0 and self.rng.random() >= fault.probability:
                        continue
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _over_rate_limit(self, now: float) -> bool:
        if self.rate_limit_per_min is None:
            return False
        with self.lock:
            while self._recent and self._recent[0] <= now - 60.0:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit_per_min:
                self.rate_limited += 1
                return True
            self._recent.append(now)
            return False

    # -- request handling ----------------------------------------------------------------------

    def handle(self, request: Request, arrived: float) -> Response | None:
        """The response to send, or None to drop the connection without answering."""
        with self.lock:
            self.inflight += 1
        try:
            return self._handle(request, arrived)
        finally:
            with self.lock:
                self.inflight -= 1

    def _handle(self, request: Request, arrived: float) -> Response | None:
        fault = self._take_fault(request.method, request.path, request.body)
        if fault is not None and fault.latency_ms:
            time.sleep(fault.latency_ms / 1000)  # the fake simulating a slow API
        response: Response | None
        if fault is not None and fault.drop_before_apply:
            response = None
        elif fault is not None and fault.status is not None and not fault.drop_after_apply:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body or {"detail": "injected fault"}
            if fault.echo_headers:
                body = {"detail": "injected fault", "request_headers": request.headers}
            response = Response(fault.status, body, headers)
        elif not self.authorized(request):
            response = Response(401, {"detail": "Not authenticated"})
        elif self._over_rate_limit(arrived):
            response = Response(429, {"detail": "Too Many Requests"})
        else:
            with self.lock:
                response = self.route(request)
        self._record(
            request,
            arrived,
            response,
            dropped=fault is not None and (fault.drop_after_apply or fault.drop_before_apply),
            delayed_ms=fault.latency_ms if fault is not None else 0,
        )
        if fault is not None and fault.drop_after_apply:
            return None
        return response

    def _record(
        self,
        request: Request,
        arrived: float,
        response: Response | None,
        dropped: bool,
        delayed_ms: float = 0,
    ) -> None:
        with self.lock:
            self._ledger.append(
                {
                    "seq": len(self._ledger),
                    "t": arrived,
                    "method": request.method,
                    "path": request.path,
                    "uid": response.uid if response else None,
                    "headers": self.mask_headers(request.headers),
                    "body": request.body,
                    "status": response.status if response and not dropped else None,
                    "applied": bool(response and response.applied),
                    "dropped": dropped,
                    "delayed_ms": delayed_ms,
                    "peer": request.peer,
                    "done": time.time(),
                }
            )

    # -- server --------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        self._server = _make_server(host, port, [self])
        self._thread = threading.Thread(
            target=functools.partial(self._server.serve_forever, poll_interval=0.05),
            daemon=True,
            name=f"fake-{type(self).__name__}",
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _admin(api: FakeApi, method: str, action: str, body: JsonBody) -> Response:
    if action == "faults" and method == "POST":
        try:
            for item in body if isinstance(body, list) else [body]:
                api.add_fault(item)
        except (TypeError, ValueError) as exc:
            return Response(400, {"detail": str(exc)})
        return Response(204)
    if action == "faults" and method == "DELETE":
        api.clear_faults()
        return Response(204)
    if action == "ledger" and method == "GET":
        return Response(200, api.ledger())
    if action == "reset" and method == "POST":
        api.reset()
        return Response(204)
    state = getattr(api, action, None)
    if method == "GET" and action == "tasks" and callable(state):
        return Response(200, state())
    with api.lock:
        extra = api.admin(method, action, body)
    return extra or Response(404, {"detail": f"no admin action {method} {action}"})


def _make_server(host: str, port: int, apis: list[FakeApi]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            arrived = time.time()
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if len(raw) < length:  # the client died mid-send: never apply half a request
                self.close_connection = True
                return
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self._send(Response(400, {"detail": "invalid JSON body"}))
                return
            api = next((a for a in apis if parts.path.startswith(a.prefix)), None)
            if api is None:
                self._send(Response(404, {"detail": "not found"}))
                return
            path = parts.path[len(api.prefix) :] or "/"
            if path.startswith("/_admin/"):
                self._send(_admin(api, self.command, path.removeprefix("/_admin/"), body))
                return
            request = Request(
                self.command,
                path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
                peer=int(self.client_address[1]),
            )
            response = api.handle(request, arrived)
            if response is None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(response)

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, response: Response) -> None:
            payload = b"" if response.body is None else json.dumps(response.body).encode()
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _QuietServer((host, port), Handler)
    server.daemon_threads = True
    return server


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default (5) resets bursts of new keep-alive connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, dropped connections) are part of the job, not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(apis: list[FakeApi], host: str, port: int) -> ThreadingHTTPServer:
    """One server for several fakes, each under its own prefix (for `bridge fake-api`)."""
    return _make_server(host, port, apis)
