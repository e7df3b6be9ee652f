"""An in-memory Human Lambdas API (`/humanlambdas/orgs/{org}/queues/{queue}/tasks/...`).

Create (201, `Authorization: Token`), and the completed-tasks list: newest completed first,
offset/limit pages with DRF-style `count/next/previous`. No update or close (as the real API).
Tests complete tasks with `complete()` or `POST /humanlambdas/_admin/complete {"id", "data"}`;
`complete_as()` (or `"completed_at"` in that body) lists a task with any `completed_at`, `None`
or text that is no time, to test readers: such tasks sort first, as Postgres puts NULLs first in
a descending order.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from task_bridge.fakes.base import FakeApi, JsonBody, Request, Response

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class FakeHumanLambdas(FakeApi):
    prefix = "/humanlambdas"

    def __init__(self, token: str = "test-token", rate_limit_per_min: int | None = None) -> None:
        super().__init__(token, rate_limit_per_min)
        self._tasks: dict[int, dict[str, Any]] = {}
        self._last_completed = datetime(2026, 1, 1, tzinfo=UTC)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Token {self.token}"

    def tasks(self) -> dict[int, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._tasks)

    def reset_state(self) -> None:
        self._tasks.clear()

    def complete(self, task_id: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Mark a task completed now (strictly after every earlier completion)."""
        with self.lock:
            task = self._tasks[task_id]
            now = max(datetime.now(UTC), self._last_completed + timedelta(microseconds=1))
            self._last_completed = now
            task.update(status="completed", completed_at=now.isoformat())
            task["data"] = {**task["data"], **(data or {})}
            return copy.deepcopy(task)

    def complete_as(
        self, task_id: int, completed_at: str | None, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Mark a task completed with this `completed_at` as given (`None`, or any text)."""
        with self.lock:
            task = self._tasks[task_id]
            task.update(status="completed", completed_at=completed_at)
            task["data"] = {**task["data"], **(data or {})}
            return copy.deepcopy(task)

    def admin(self, method: str, action: str, body: JsonBody) -> Response | None:
        if action == "complete" and method == "POST" and isinstance(body, dict):
            if body.get("id") not in self._tasks:
                return Response(404, {"detail": "no such task"})
            if "completed_at" in body:
                done = self.complete_as(body["id"], body["completed_at"], body.get("data"))
                return Response(200, done)
            return Response(200, self.complete(body["id"], body.get("data")))
        return None

    def route(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 6 or parts[0] != "orgs" or parts[2] != "queues" or parts[4] != "tasks":
            return _error(404, "Not found.")
        org, queue, action = parts[1], parts[3], parts[5]
        if action == "create" and request.method == "POST":
            return self._create(org, queue, request.body)
        if action == "completed" and request.method == "GET":
            return self._completed(org, queue, request)
        return _error(405 if action in ("create", "completed") else 404, "Not allowed.")

    def _create(self, org: str, queue: str, body: Any) -> Response:
        data = body.get("data") if isinstance(body, dict) else None
        if not data or not isinstance(data, dict):
            return _error(400, "No data")
        task_id = len(self._tasks) + 1
        task = {
            "id": task_id,
            "org": org,
            "queue": queue,
            "status": "new",
            "source": "api",
            "data": data,
            "created_at": datetime.now(UTC).isoformat(),
            "completed_at": None,
        }
        self._tasks[task_id] = task
        return Response(201, copy.deepcopy(task), applied=True, uid=str(task_id))

    def _completed(self, org: str, queue: str, request: Request) -> Response:
        try:
            offset = int(request.query.get("offset", ["0"])[0])
            limit = min(MAX_LIMIT, int(request.query.get("limit", [str(DEFAULT_LIMIT)])[0]))
        except ValueError:
            return _error(400, "offset and limit must be integers")
        done = sorted(
            (
                t
                for t in self._tasks.values()
                if t["status"] == "completed" and t["org"] == org and t["queue"] == queue
            ),
            key=lambda t: (t["completed_at"] is None, str(t["completed_at"] or ""), t["id"]),
            reverse=True,
        )
        host = request.headers.get("host", "localhost")
        base = f"http://{host}{self.prefix}/orgs/{org}/queues/{queue}/tasks/completed"

        def page(start: int) -> str:
            return f"{base}?{urlencode({'offset': start, 'limit': limit})}"

        return Response(
            200,
            {
                "status_code": 200,
                "count": len(done),
                "next": page(offset + limit) if offset + limit < len(done) else None,
                "previous": page(max(0, offset - limit)) if offset > 0 else None,
                "tasks": copy.deepcopy(done[offset : offset + limit]),
            },
        )


def _error(status: int, message: str) -> Response:
    return Response(status, {"status_code": status, "errors": [{"message": message}]})
