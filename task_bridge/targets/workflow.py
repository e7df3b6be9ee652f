"""Workflow engines in the epilot style (seed 004): complete a step, or run its automation.

`complete_step`: `PATCH /v1/workflows/executions/{execution_id}/steps/{step_id}` with the
task's fields (`status` defaults to `COMPLETED`).

`run_automation`: find the entity's automated workflow task (`POST /v1/entity:search`), load
the execution (`GET /v1/workflows/executions/{id}`), find the step among top-level `STEP`s or
inside `SECTION`s, start the automation (`POST /v1/automation/executions`), poll it every
`poll_interval` until `success/failed/cancelled/skipped/hot` (`paused` and `scheduled` are
not terminal) or `poll_timeout`, then `PATCH` the step with the mapped status and
`automationConfig.executionId/executionStatus`.

Durability: the execution id is stored in the outbox database *before* polling starts, so an
operation retried after a crash resumes polling that execution instead of starting a second
one. Starting an execution has no idempotency key: a start whose answer is lost (timeout,
dropped connection) can start it twice; that window is one request wide.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import SecretStr

from task_bridge.durations import Duration
from task_bridge.errors import PermanentDeliveryError
from task_bridge.jsonenc import dumps_payload
from task_bridge.targets.base import Call, Delivered, TargetDeps
from task_bridge.targets.http import NO_BODY, HttpTarget, TargetConfigBase, json_body

TERMINAL = {"success", "failed", "cancelled", "skipped", "hot"}
STEP_STATUS = {
    "success": "COMPLETED",
    "failed": "FAILED",
    "hot": "FAILED",
    "skipped": "SKIPPED",
    "cancelled": "SKIPPED",
    "timeout": "FAILED",
}
STEP_STATUSES = (
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
)
COMPLETE_KEYS = frozenset(
    {
        "execution_id",
        "step_id",
        "status",
        "assignedTo",
        "dueDate",
        "name",
        "description",
        "automationConfig",
        "startedTime",
        "completedTime",
    }
)
AUTOMATION_KEYS = frozenset({"entity_id", "execution_id", "step_id", "flow_id", "query"})


class WorkflowConfig(TargetConfigBase):
    kind: Literal["workflow"]
    """An epilot-style workflow engine: `complete_step`, `run_automation`."""
    token: SecretStr
    """API token, sent as `Authorization: Bearer` (a secret)."""
    entity_url: str | None = None
    """Entity API base (default: base_url)."""
    workflow_url: str | None = None
    """Workflow executions API base (default: base_url)."""
    automation_url: str | None = None
    """Automation API base (default: base_url)."""
    poll_interval: Duration = 1.0
    """How often a started automation's execution is polled."""
    poll_timeout: Duration = 300.0
    """An automation not terminal after this long marks its step FAILED."""

    OPS = frozenset({"complete_step", "run_automation"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        keys = COMPLETE_KEYS if op == "complete_step" else AUTOMATION_KEYS
        problems = [f"task.{key}: unknown {op} key" for key in task if key not in keys]
        if op == "complete_step":
            problems += [
                f"task.{key}: required for complete_step"
                for key in ("execution_id", "step_id")
                if key not in task
            ]
            status = task.get("status")
            if isinstance(status, str) and "{" not in status and status not in STEP_STATUSES:
                problems.append(f"task.status: must be one of {', '.join(STEP_STATUSES)}")
        elif not ({"entity_id", "query"} & set(task)):
            problems.append("task.entity_id: run_automation needs entity_id (or query)")
        return problems


class WorkflowTarget(HttpTarget):
    kind = "workflow"
    config: WorkflowConfig

    def __init__(
        self,
        name: str,
        config: WorkflowConfig,
        deps: TargetDeps,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, config, deps)
        self.clock = clock
        self.entity_url = (config.entity_url or self.base_url).rstrip("/")
        self.workflow_url = (config.workflow_url or self.base_url).rstrip("/")
        self.automation_url = (config.automation_url or self.base_url).rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}

    async def _call(self, method: str, url: str, body: Any = None) -> Any:
        response = await self.call(method, url, NO_BODY if body is None else body)
        return json_body(response)

    async def send(self, call: Call) -> Delivered:
        task = dict(call.payload)
        if call.op == "complete_step":
            execution_id, step_id = _required(task, "execution_id"), _required(task, "step_id")
            body = {k: v for k, v in task.items() if k not in ("execution_id", "step_id")}
            body.setdefault("status", "COMPLETED")
            step = await self._patch_step(execution_id, step_id, body)
            return Delivered(200, f"{execution_id}/{step_id}", step)
        if call.op == "run_automation":
            return await self._run_automation(call, task)
        raise PermanentDeliveryError(f"workflow does not support op '{call.op}'")

    async def _patch_step(self, execution_id: str, step_id: str, body: dict[str, Any]) -> Any:
        url = f"{self.workflow_url}/v1/workflows/executions/{execution_id}/steps/{step_id}"
        return await self._call("PATCH", url, body)

    async def _run_automation(self, call: Call, task: dict[str, Any]) -> Delivered:
        state_key = f"workflow:{self.name}:{call.op_id}"
        stored = await self.store.get_state(state_key)
        if stored is not None:  # started before a crash or retry: resume polling it
            started = _loads(stored)
        else:
            started = await self._start(task)
            await self.store.set_state(state_key, dumps_payload(started))
        status = await self._poll(started["automation_id"])
        mapped = STEP_STATUS[status]
        step = await self._patch_step(
            started["execution_id"],
            started["step_id"],
            {
                "status": mapped,
                "automationConfig": {
                    "flowId": started["flow_id"],
                    "executionId": started["automation_id"],
                    "executionStatus": status,
                },
            },
        )
        result = {**started, "execution_status": status, "step_status": mapped, "step": step}
        return Delivered(200, started["automation_id"], result)

    async def _start(self, task: dict[str, Any]) -> dict[str, str]:
        """Entity search -> execution -> step -> start the automation; what to poll and patch."""
        entity_id = task.get("entity_id")
        query = task.get("query") or (f"_id:{entity_id}" if entity_id else None)
        if not query:
            raise PermanentDeliveryError("run_automation needs task.entity_id or task.query")
        found = await self._call(
            "POST", f"{self.entity_url}/v1/entity:search", {"q": query, "hydrate": True}
        )
        results = (found or {}).get("results") or []
        if not results:
            raise PermanentDeliveryError(f"entity search {query!r} found nothing")
        entity = results[0]
        summary = _automation_task(entity, task.get("execution_id"), task.get("step_id"))
        execution_id = str(summary["id"])
        step_id = str(task.get("step_id") or summary["task_id"])
        execution = await self._call(
            "GET", f"{self.workflow_url}/v1/workflows/executions/{execution_id}"
        )
        step = find_step((execution or {}).get("flow") or [], step_id)
        if step is None:
            raise PermanentDeliveryError(f"step {step_id} not in workflow execution {execution_id}")
        flow_id = task.get("flow_id") or (step.get("automationConfig") or {}).get("flowId")
        if not flow_id:
            raise PermanentDeliveryError(f"step {step_id} has no automationConfig.flowId")
        started = await self._call(
            "POST",
            f"{self.automation_url}/v1/automation/executions",
            {
                "entity_id": str(entity.get("_id") or entity_id),
                "flow_id": flow_id,
                "workflow_context": {
                    "workflow_exec_id": execution_id,
                    "workflow_exec_task_id": step_id,
                },
            },
        )
        automation_id = (started or {}).get("id")
        if not automation_id:
            raise PermanentDeliveryError("automation start answered without an id")
        return {
            "automation_id": str(automation_id),
            "execution_id": execution_id,
            "step_id": step_id,
            "flow_id": str(flow_id),
        }

    async def _poll(self, automation_id: str) -> str:
        """Poll until a terminal status, or 'timeout' after `poll_timeout`."""
        deadline = self.clock() + self.config.poll_timeout
        url = f"{self.automation_url}/v1/automation/executions/{automation_id}"
        while True:
            execution = await self._call("GET", url)
            status = str((execution or {}).get("execution_status") or "")
            if status in TERMINAL:
                return status
            if self.clock() + self.config.poll_interval > deadline:
                return "timeout"
            await asyncio.sleep(self.config.poll_interval)  # the API's polling cadence


def find_step(flow: list[Any], step_id: str) -> dict[str, Any] | None:
    """A step by id among top-level STEPs or inside SECTIONs (seed 004, step 4)."""
    for item in flow:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "SECTION":
            for step in item.get("steps") or []:
                if isinstance(step, dict) and step.get("id") == step_id:
                    return step
        elif item.get("id") == step_id:
            return item
    return None


def _automation_task(
    entity: dict[str, Any], execution_id: str | None, step_id: str | None
) -> dict[str, Any]:
    """The entity's workflow summary to automate: the one asked for, else the first
    whose current task is an AUTOMATION."""
    summaries = [
        s
        for group in (entity.get("workflows") or {}).values()
        if isinstance(group, list)
        for s in group
        if isinstance(s, dict)
    ]
    for summary in summaries:
        if execution_id is not None and summary.get("id") != execution_id:
            continue
        if step_id is not None and summary.get("task_id") != step_id and execution_id is None:
            continue
        if execution_id is not None or summary.get("task_execution_type") == "AUTOMATION":
            return summary
    if execution_id is not None:
        return {"id": execution_id, "task_id": step_id}
    raise PermanentDeliveryError(
        f"entity {entity.get('_id')} has no workflow waiting on an automation task"
    )


def _required(task: dict[str, Any], key: str) -> str:
    value = task.get(key)
    if value in (None, ""):
        raise PermanentDeliveryError(f"task.{key} is required")
    return str(value)


def _loads(text: str) -> dict[str, str]:
    data = json.loads(text)
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}
