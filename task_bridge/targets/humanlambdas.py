"""Human Lambdas: create tasks in a queue; completed tasks come back as events.

`POST {base}/orgs/{org}/queues/{queue}/tasks/create {"data": {...}}` with
`Authorization: Token`. The API offers no update, no close and no external id, so creates are
**at-least-once**: an ambiguous attempt (timeout, dropped connection) is logged as
`op.possibly_duplicated` and retried. Completed tasks are read back by
`task_bridge.targets.humanlambdas_poller.HumanLambdasSource`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, SecretStr

from task_bridge.durations import Duration
from task_bridge.errors import PermanentDeliveryError, TransientDeliveryError
from task_bridge.observability import log
from task_bridge.targets.base import Call, Delivered
from task_bridge.targets.http import HttpTarget, TargetConfigBase, json_body
from task_bridge.yamlsrc import did_you_mean

DEFAULT_BASE_URL = "https://api.humanlambdas.com"
TASK_KEYS = frozenset({"data", "queue"})
DEFAULT_POLL_INTERVAL_S = 10.0


class HumanLambdasConfig(TargetConfigBase):
    kind: Literal["humanlambdas"]
    """Human Lambdas: create-only tasks in a queue; completed tasks can come back as events."""
    base_url: str = DEFAULT_BASE_URL
    """Human Lambdas' API base URL."""
    token: SecretStr
    """API token, sent as `Authorization: Token` (a secret)."""
    org: str
    """Organisation slug in the API paths."""
    queue: str
    """Default queue of created tasks (an action may name another with `task.queue`)."""
    poll_completed: list[str] | bool = False
    """Queues whose completed tasks become events (`true`: the default queue)."""
    poll_interval: Duration = DEFAULT_POLL_INTERVAL_S
    """How often the completed tasks of each polled queue are read."""
    page_size: int = Field(100, ge=1, le=1000)
    """Completed tasks read per request while polling."""

    def polled_queues(self) -> list[str]:
        if self.poll_completed is True:
            return [self.queue]
        return list(self.poll_completed or [])

    OPS = frozenset({"create"})
    UNSUPPORTED_NOTE = "the Human Lambdas API can only create tasks (no update or close)"

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        problems = [
            f"task.{key}: unknown Human Lambdas task key{did_you_mean(key, TASK_KEYS)}"
            for key in task
            if key not in TASK_KEYS
        ]
        data = task.get("data")
        if data is None:
            problems.append("task.data: required (the task's block values)")
        elif not isinstance(data, dict | str):
            problems.append("task.data: must be a mapping")
        return problems


class HumanLambdasTarget(HttpTarget):
    kind = "humanlambdas"
    config: HumanLambdasConfig

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.config.token.get_secret_value()}"}

    async def send(self, call: Call) -> Delivered:
        if call.op != "create":
            raise PermanentDeliveryError(
                f"humanlambdas cannot {call.op}: {self.config.unsupported_note}"
            )
        queue = call.payload.get("queue") or self.config.queue
        path = f"/orgs/{self.config.org}/queues/{queue}/tasks/create"
        try:
            response = await self.call("POST", path, {"data": call.payload.get("data") or {}})
        except TransientDeliveryError as exc:
            if exc.http_status is None:  # no answer: the task may exist already
                log(
                    self.log,
                    logging.WARNING,
                    "op.possibly_duplicated",
                    target=self.name,
                    uid=call.uid,
                    op_id=call.op_id,
                    error=str(exc),
                    note="Human Lambdas has no external id: the retry may create a second task",
                )
            raise
        data = json_body(response)
        remote = data.get("id") if isinstance(data, dict) else None
        return Delivered(response.status_code, None if remote is None else str(remote), data)
