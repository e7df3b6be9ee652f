"""An in-memory Copilotz API (`/copilotz/api/auth/login`, `/copilotz/rest/tasks...`).

Login with the configured username/password/namespace gives a bearer token (`tk_...`) with an
expiry; every other call needs a live token (401 otherwise). `expire_tokens()` (or
`POST /copilotz/_admin/expire_tokens`) makes every issued token stale, as after its lifetime.
"""

from __future__ import annotations

import copy
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from task_bridge.fakes.base import FakeApi, JsonBody, Request, Response

REQUIRED = ("workflow", "currentStep", "status", "name", "description")
STATUSES = ("active", "pending", "failed", "completed")


class FakeCopilotz(FakeApi):
    prefix = "/copilotz"

    def __init__(
        self,
        username: str = "bridge",
        password: str = "test-password",
        namespace: str = "acme",
        token_lifetime: timedelta = timedelta(hours=1),
        rate_limit_per_min: int | None = None,
    ) -> None:
        super().__init__("", rate_limit_per_min)
        self.credentials = {"username": username, "password": password, "namespace": namespace}
        self.token_lifetime = token_lifetime
        self._tokens: dict[str, datetime] = {}
        self._tasks: dict[str, dict[str, Any]] = {}

    def tasks(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._tasks)

    def expire_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def reset_state(self) -> None:
        self._tokens.clear()
        self._tasks.clear()

    def admin(self, method: str, action: str, body: JsonBody) -> Response | None:
        if action == "expire_tokens" and method == "POST":
            self._tokens.clear()
            return Response(204)
        return None

    def authorized(self, request: Request) -> bool:
        if request.path == "/api/auth/login":
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self._tokens.get(token)
        return scheme == "Bearer" and expires is not None and datetime.now(UTC) < expires

    def route(self, request: Request) -> Response:
        if request.path == "/api/auth/login" and request.method == "POST":
            return self._login(request.body)
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["rest", "tasks"]:
            return _error(404, "not found")
        if len(parts) == 2 and request.method == "POST":
            return self._create(request.body)
        if len(parts) == 2 and request.method == "GET":
            ext = request.query.get("extId", [None])[0]
            items = [t for t in self._tasks.values() if ext is None or t.get("extId") == ext]
            return Response(200, {"data": copy.deepcopy(items)})
        if len(parts) == 3 and parts[2] in self._tasks:
            if request.method == "GET":
                return Response(200, copy.deepcopy(self._tasks[parts[2]]))
            if request.method == "PUT":
                return self._update(parts[2], request.body)
        return _error(404, "task not found")

    def _login(self, body: Any) -> Response:
        if not isinstance(body, dict) or any(body.get(k) != v for k, v in self.credentials.items()):
            return _error(401, "invalid credentials")
        token = f"tk_{secrets.token_hex(12)}"
        expires = datetime.now(UTC) + self.token_lifetime
        self._tokens[token] = expires
        return Response(200, {"accessToken": token, "expiresAt": expires.isoformat()})

    def _create(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "body must be an object")
        missing = [k for k in REQUIRED if k not in body]
        if missing:
            return _error(400, f"missing {', '.join(missing)}")
        if body["status"] not in STATUSES:
            return _error(400, f"status must be one of {', '.join(STATUSES)}")
        task_id = secrets.token_hex(12)
        task = {"_id": task_id, **body, "createdAt": datetime.now(UTC).isoformat()}
        self._tasks[task_id] = task
        return Response(200, copy.deepcopy(task), applied=True, uid=task_id)

    def _update(self, task_id: str, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "body must be an object")
        if "status" in body and body["status"] not in STATUSES:
            return _error(400, f"status must be one of {', '.join(STATUSES)}")
        task = {**self._tasks[task_id], **body, "_id": task_id}
        self._tasks[task_id] = task
        return Response(200, copy.deepcopy(task), applied=True, uid=task_id)


def _error(status: int, message: str) -> Response:
    return Response(status, {"error": {"message": message}})
