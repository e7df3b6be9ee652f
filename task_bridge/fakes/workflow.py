"""An in-memory epilot-style workflow API (`/epilot/v1/...`): entity search, workflow
executions with STEPs and SECTIONs, automation executions whose status follows a script.

Seed with `seed_entity`, `seed_execution` (or `POST /epilot/_admin/seed {"entities", "executions"}`)
and script an automation flow with `script(flow_id, ["in_progress", "paused", "success"])` (or
`POST /epilot/_admin/script {"flow_id", "statuses"}`): each GET of an execution moves one step
along its flow's script; the last status sticks (end on `in_progress` for a timeout).
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from task_bridge.fakes.base import FakeApi, JsonBody, Request, Response

STEP_STATUSES = frozenset(
    {
        "UNASSIGNED",
        "ASSIGNED",
        "PENDING",
        "IN_PROGRESS",
        "COMPLETED",
        "SKIPPED",
        "SCHEDULED",
        "CONDITION_PENDING",
        "WAITING_FOR_CONFIRMATION",
        "ON_HOLD",
        "FAILED",
    }
)
DEFAULT_SCRIPT = ("in_progress", "success")


class FakeWorkflow(FakeApi):
    prefix = "/epilot"

    def __init__(self, token: str = "test-token", rate_limit_per_min: int | None = None) -> None:
        super().__init__(token, rate_limit_per_min)
        self._entities: dict[str, dict[str, Any]] = {}
        self._executions: dict[str, dict[str, Any]] = {}
        self._automations: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, list[str]] = {}

    # -- test hooks ------------------------------------------------------------------------------

    def seed_entity(self, entity: dict[str, Any]) -> None:
        with self.lock:
            self._entities[str(entity["_id"])] = copy.deepcopy(entity)

    def seed_execution(self, execution: dict[str, Any]) -> None:
        with self.lock:
            self._executions[str(execution["id"])] = copy.deepcopy(execution)

    def script(self, flow_id: str, statuses: list[str]) -> None:
        with self.lock:
            self._scripts[flow_id] = list(statuses)

    def executions(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._executions)

    def automation_executions(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._automations.values()))

    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.executions()

    def reset_state(self) -> None:
        self._entities.clear()
        self._executions.clear()
        self._automations.clear()
        self._scripts.clear()

    def admin(self, method: str, action: str, body: JsonBody) -> Response | None:
        if method == "POST" and action == "seed" and isinstance(body, dict):
            for entity in body.get("entities", []):
                self._entities[str(entity["_id"])] = entity
            for execution in body.get("executions", []):
                self._executions[str(execution["id"])] = execution
            return Response(204)
        if method == "POST" and action == "script" and isinstance(body, dict):
            self._scripts[str(body["flow_id"])] = list(body["statuses"])
            return Response(204)
        if method == "GET" and action == "automation_executions":
            return Response(200, list(self._automations.values()))
        return None

    # -- API -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/v1/entity:search" and method == "POST":
            return self._search(request.body)
        parts = path.strip("/").split("/")
        if parts[:3] == ["v1", "workflows", "executions"] and len(parts) >= 4:
            execution = self._executions.get(parts[3])
            if execution is None:
                return Response(404, {"message": "execution not found"})
            if len(parts) == 4 and method == "GET":
                return Response(200, copy.deepcopy(execution))
            if len(parts) == 6 and parts[4] == "steps" and method == "PATCH":
                return self._patch_step(execution, parts[5], request.body)
        if parts[:3] == ["v1", "automation", "executions"]:
            if len(parts) == 3 and method == "POST":
                return self._start(request.body)
            if len(parts) == 4 and method == "GET":
                return self._poll(parts[3])
        return Response(404, {"message": "not found"})

    def _search(self, body: Any) -> Response:
        query = body.get("q") if isinstance(body, dict) else None
        if not isinstance(query, str) or ":" not in query:
            return Response(400, {"message": "q must be field:value"})
        field, _, value = query.partition(":")
        value = value.strip('"')
        hits = [e for e in self._entities.values() if str(e.get(field)) == value]
        return Response(200, {"hits": len(hits), "results": copy.deepcopy(hits)})

    def _patch_step(self, execution: dict[str, Any], step_id: str, body: Any) -> Response:
        if not isinstance(body, dict):
            return Response(400, {"message": "body must be an object"})
        if "status" in body and body["status"] not in STEP_STATUSES:
            return Response(400, {"message": f"unknown step status {body['status']}"})
        for item in execution.get("flow", []):
            for step in item.get("steps", []) if item.get("type") == "SECTION" else [item]:
                if step.get("id") == step_id:
                    config = {
                        **step.get("automationConfig", {}),
                        **body.get("automationConfig", {}),
                    }
                    step.update(body)
                    if config:
                        step["automationConfig"] = config
                    return Response(200, copy.deepcopy(step), applied=True, uid=step_id)
        return Response(404, {"message": f"step {step_id} not found"})

    def _start(self, body: Any) -> Response:
        if not isinstance(body, dict) or not body.get("entity_id") or not body.get("flow_id"):
            return Response(400, {"message": "entity_id and flow_id are required"})
        now = datetime.now(UTC).isoformat()
        execution = {
            "id": str(uuid.uuid4()),
            "execution_status": "pending",
            "entity_id": body["entity_id"],
            "flow_id": body["flow_id"],
            "workflow_context": body.get("workflow_context"),
            "created_at": now,
            "updated_at": now,
            "_polls": 0,
        }
        self._automations[execution["id"]] = execution
        return Response(201, _public(execution), applied=True, uid=execution["id"])

    def _poll(self, automation_id: str) -> Response:
        execution = self._automations.get(automation_id)
        if execution is None:
            return Response(404, {"message": "execution not found"})
        script = self._scripts.get(execution["flow_id"], list(DEFAULT_SCRIPT))
        execution["execution_status"] = script[min(execution["_polls"], len(script) - 1)]
        execution["_polls"] += 1
        execution["updated_at"] = datetime.now(UTC).isoformat()
        return Response(200, _public(execution))


def _public(execution: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in execution.items() if not k.startswith("_")}
