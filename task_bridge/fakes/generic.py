"""An in-memory plain REST task API (`/generic/tasks...`) for the `http` target.

`POST /tasks` (201, honours `Idempotency-Key`: the same key answers the first response and
creates nothing), `GET|PUT|PATCH|DELETE /tasks/{id}`, `POST /tasks/{id}/close`. Bearer auth.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from task_bridge.fakes.base import FakeApi, Request, Response


class FakeGeneric(FakeApi):
    prefix = "/generic"

    def __init__(self, token: str = "test-token", rate_limit_per_min: int | None = None) -> None:
        super().__init__(token, rate_limit_per_min)
        self._tasks: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, Response] = {}

    def tasks(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._tasks)

    def reset_state(self) -> None:
        self._tasks.clear()
        self._keys.clear()

    def route(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        body = request.body if isinstance(request.body, dict) else {}
        if parts == ["tasks"] and request.method == "POST":
            key = request.headers.get("idempotency-key")
            if key is not None and key in self._keys:
                return self._keys[key]
            task_id = uuid.uuid4().hex[:12]
            self._tasks[task_id] = {**body, "id": task_id, "status": "open"}
            response = Response(201, copy.deepcopy(self._tasks[task_id]), applied=True, uid=task_id)
            if key is not None:
                self._keys[key] = response
            return response
        if len(parts) < 2 or parts[0] != "tasks" or parts[1] not in self._tasks:
            return Response(404, {"error": "task not found"})
        task_id = parts[1]
        if len(parts) == 3 and parts[2] == "close" and request.method == "POST":
            self._tasks[task_id]["status"] = "closed"
        elif len(parts) == 2 and request.method == "PUT":
            self._tasks[task_id] = {**body, "id": task_id, "status": body.get("status", "open")}
        elif len(parts) == 2 and request.method == "PATCH":
            self._tasks[task_id].update({**body, "id": task_id})
        elif len(parts) == 2 and request.method == "DELETE":
            del self._tasks[task_id]
            return Response(204, applied=True, uid=task_id)
        elif not (len(parts) == 2 and request.method == "GET"):
            return Response(405, {"error": "method not allowed"})
        applied = request.method != "GET"
        return Response(200, copy.deepcopy(self._tasks[task_id]), applied=applied, uid=task_id)
