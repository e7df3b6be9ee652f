"""An in-memory Fragment API (`/api/v1/tasks...`): a real HTTP server with faults and a ledger."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from task_bridge.fakes.base import FakeApi, Request, Response

STATUSES = ("TODO", "STARTED", "DONE")
DEFAULT_PAGE = 100


def _now() -> str:
    return datetime.now(UTC).isoformat()


class FakeFragment(FakeApi):
    prefix = "/api/v1"

    def __init__(self, token: str = "test-token", rate_limit_per_min: int | None = None) -> None:
        super().__init__(token, rate_limit_per_min)
        self._tasks: dict[str, dict[str, Any]] = {}

    def tasks(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._tasks)

    def reset_state(self) -> None:
        self._tasks.clear()

    def route(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if parts == ["tasks"] and request.method == "GET":
            return self._list(request.query)
        if parts == ["tasks", "batch"] and request.method == "PUT":
            return self._batch(request.body)
        if len(parts) == 2 and parts[0] == "tasks":
            uid = parts[1]
            try:
                uid = str(uuid.UUID(uid))
            except ValueError:
                return Response(422, {"detail": [{"loc": ["path", "uid"], "msg": "not a UUID"}]})
            if request.method == "PUT":
                return self._upsert(uid, request.body)
            if request.method == "PATCH":
                return self._patch(uid, request.body)
            if request.method == "GET":
                task = self._tasks.get(uid)
                return Response(200, task) if task else Response(404, {"detail": "Not found"})
        return Response(404, {"detail": "Not found"})

    def _list(self, query: dict[str, list[str]]) -> Response:
        """Cursor pagination; the cursor is an opaque offset (real names: `limit`, `cursor`)."""
        try:
            limit = int(query.get("limit", [str(DEFAULT_PAGE)])[0])
            start = int(query.get("cursor", ["0"])[0])
        except ValueError:
            return Response(422, {"detail": "limit and cursor must be integers"})
        if limit < 1 or start < 0:
            return Response(422, {"detail": "limit must be >= 1 and cursor >= 0"})
        tasks = list(self._tasks.values())
        end = start + limit
        meta = {
            "limit": limit,
            "self_cursor": str(start),
            "prev_cursor": str(max(0, start - limit)) if start > 0 else None,
            "next_cursor": str(end) if end < len(tasks) else None,
            "total_count": len(tasks),
        }
        return Response(200, {"items": tasks[start:end], "meta": meta})

    def _invalid(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return Response(422, {"detail": "body must be a JSON object"})
        if "fields" in body and not isinstance(body["fields"], dict):
            return Response(422, {"detail": "fields must be an object"})
        if "status" in body and body["status"] not in STATUSES:
            return Response(422, {"detail": f"status must be one of {STATUSES}"})
        return None

    def _upsert(self, uid: str, body: Any) -> Response:
        invalid = self._invalid(body)
        if invalid is not None:
            invalid.uid = uid
            return invalid
        now = _now()
        task = self._tasks.get(uid) or {
            "uid": uid,
            "status": "TODO",
            "fields": {},
            "due_at": None,
            "created_at": now,
        }
        task = {**task, **body, "uid": uid, "updated_at": now}
        self._tasks[uid] = task
        return Response(200, task, applied=True, uid=uid)

    def _patch(self, uid: str, body: Any) -> Response:
        task = self._tasks.get(uid)
        if task is None:
            return Response(404, {"detail": "Not found"}, uid=uid)
        invalid = self._invalid(body)
        if invalid is not None:
            invalid.uid = uid
            return invalid
        fields = {**task.get("fields", {}), **body.get("fields", {})}
        task = {**task, **body, "fields": fields, "uid": uid, "updated_at": _now()}
        self._tasks[uid] = task
        return Response(200, task, applied=True, uid=uid)

    def _batch(self, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return Response(422, {"detail": 'body must be {"items": [...]}'})
        results = []
        for item in body["items"]:
            uid = str(item.get("uid", "")) if isinstance(item, dict) else ""
            try:
                uid = str(uuid.UUID(uid))
            except ValueError:
                results.append({"status": 422, "detail": "uid must be a UUID"})
                continue
            response = self._upsert(uid, {k: v for k, v in item.items() if k != "uid"})
            results.append(response.body)
        return Response(200, {"items": results}, applied=True)
