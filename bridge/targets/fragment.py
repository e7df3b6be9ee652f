"""Fragment (onfragment.com): idempotent `PUT /tasks/{uuid}`, `PATCH` to update and close.

The rendered UID becomes the task's UUID as Fragment's "Map task IDs" guide recommends: a UUID
is used as is, any other string becomes `UUID(md5(uid))`.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from bridge.errors import PermanentDeliveryError
from bridge.jsonenc import PayloadError, dumps_payload
from bridge.outbox.base import StoredOp
from bridge.targets.base import Delivered
from bridge.targets.http import TargetConfigBase, request, user_agent
from bridge.yamlsrc import did_you_mean

DEFAULT_BASE_URL = "https://api.onfragment.com/api/v1"
TASK_KEYS = frozenset(
    {
        "fields",
        "due_at",
        "status",
        "queue_uid",
        "assignee_uid",
        "assignee_email",
        "skills",
        "participants",
        "case_uid",
        "parent_uid",
        "snooze_expires_at",
        "form_data",
        "form_type",
        "metadata_form_uid",
        "external_status",
        "external_created_at",
        "external_updated_at",
        "archived",
    }
)
STATUSES = ("TODO", "STARTED", "DONE")


class FragmentConfig(TargetConfigBase):
    kind: Literal["fragment"]
    base_url: str = DEFAULT_BASE_URL
    token: SecretStr
    user_agent: str | None = None


def fragment_task_uuid(uid: str) -> str:
    """The Fragment task UUID for a rendered UID (md5 of the UID unless it is a UUID)."""
    try:
        return str(uuid.UUID(uid))
    except ValueError:
        return str(uuid.UUID(hashlib.md5(uid.encode("utf-8")).hexdigest()))


class FragmentTarget:
    kind = "fragment"
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def __init__(self, name: str, config: FragmentConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.base_url = config.base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {config.token.get_secret_value()}",
            "User-Agent": config.user_agent or user_agent(),
            "Content-Type": "application/json",
        }

    def __repr__(self) -> str:
        return f"FragmentTarget(name={self.name!r}, base_url={self.base_url!r})"

    async def send(self, op: StoredOp) -> Delivered:
        task_uuid = fragment_task_uuid(op.uid)
        body: dict[str, Any] = dict(op.payload)
        if op.op in ("create", "upsert"):
            method = "PUT"
        elif op.op == "update":
            method = "PATCH"
        elif op.op == "close":
            method, body["status"] = "PATCH", "DONE"
        else:
            raise PermanentDeliveryError(f"fragment does not support op '{op.op}'")
        try:
            content = dumps_payload(body)
        except PayloadError as exc:
            raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc
        response = await request(
            self.client,
            method,
            f"{self.base_url}/tasks/{task_uuid}",
            content=content,
            headers=self._headers,
            timeout=self.config.timeout,
        )
        return Delivered(http_status=response.status_code, remote_id=task_uuid)

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        if not isinstance(task, dict):
            return ["task: must be a mapping"]
        problems = []
        for key in task:
            if key not in TASK_KEYS:
                problems.append(
                    f"task.{key}: unknown Fragment task key{did_you_mean(key, TASK_KEYS)}"
                )
        fields = task.get("fields")
        if fields is not None and not isinstance(fields, dict):
            problems.append("task.fields: must be a mapping")
        status = task.get("status")
        if isinstance(status, str) and "{" not in status and status not in STATUSES:
            problems.append(f"task.status: must be one of {', '.join(STATUSES)}")
        return problems

    async def aclose(self) -> None:
        return None
