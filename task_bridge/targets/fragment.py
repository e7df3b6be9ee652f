"""Fragment (onfragment.com): idempotent `PUT /tasks/{uuid}`, `PATCH` to update and close.

The rendered UID becomes the task's UUID as Fragment's "Map task IDs" guide recommends: a UUID
is used as is, any other string becomes `UUID(md5(uid))`.

Fragment allows 60 requests/min, so when several upserts are due they go out as one
`PUT /tasks/batch {"items": [...]}` (idempotent bulk upsert). The batch response is not
documented: an `items` list of the same length is read per item (an item carrying an HTTP-like
`status` >= 400 failed, classified like a response of its own). A 2xx answer that cannot be read
per item, or a batch refused as a whole, raises: delivery then sends the ops one at a time, so
each gets an answer of its own and only a bad item dies.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from task_bridge.errors import DeliveryError, PermanentDeliveryError
from task_bridge.targets.base import Call, Delivered, TargetDeps
from task_bridge.targets.http import (
    HttpTarget,
    TargetConfigBase,
    classify,
    encode_body,
    json_body,
)
from task_bridge.yamlsrc import did_you_mean

DEFAULT_BASE_URL = "https://api.onfragment.com/api/v1"
DEFAULT_BATCH_SIZE = 100
BATCH_OPS = frozenset({"create", "upsert"})
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
    """Fragment (onfragment.com): idempotent `PUT /tasks/{uuid}`."""
    base_url: str = DEFAULT_BASE_URL
    """Fragment's API base URL."""
    token: SecretStr
    """API token, sent as `Authorization: Bearer` (a secret: use `${FRAGMENT_TOKEN}`)."""
    user_agent: str | None = None
    """`User-Agent` header to send instead of `task-bridge/<version>`."""
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=1000)
    """Most upserts per `PUT /tasks/batch`; 1 turns batching off."""

    OPS = frozenset({"create", "upsert", "update", "close"})

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


def fragment_task_uuid(uid: str) -> str:
    """The Fragment task UUID for a rendered UID (md5 of the UID unless it is a UUID)."""
    # what uuid.UUID strips before it wants 32 hex digits: most UIDs fail here, without the
    # cost of an exception
    digits = uid.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
    if len(digits) == 32:
        try:
            return str(uuid.UUID(uid))
        except ValueError:
            pass
    h = hashlib.md5(uid.encode("utf-8")).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"  # str(uuid.UUID(h)), cheaper


class FragmentTarget(HttpTarget):
    kind = "fragment"
    batch_ops = BATCH_OPS
    config: FragmentConfig

    def __init__(self, name: str, config: FragmentConfig, deps: TargetDeps) -> None:
        super().__init__(name, config, deps)
        self.max_batch = config.batch_size
        if config.user_agent:
            self.headers["User-Agent"] = config.user_agent

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}

    async def send(self, call: Call) -> Delivered:
        task_uuid = fragment_task_uuid(call.uid)
        body: dict[str, Any] = dict(call.payload)
        if call.op in ("create", "upsert"):
            method = "PUT"
        elif call.op == "update":
            method = "PATCH"
        elif call.op == "close":
            method, body["status"] = "PATCH", "DONE"
        else:
            raise PermanentDeliveryError(f"fragment does not support op '{call.op}'")
        response = await self.call(method, f"/tasks/{task_uuid}", body)
        return Delivered(response.status_code, task_uuid, json_body(response))

    async def send_batch(self, calls: Sequence[Call]) -> list[Delivered | DeliveryError]:
        results: dict[int, Delivered | DeliveryError] = {}
        uuids = [fragment_task_uuid(call.uid) for call in calls]
        encoded: dict[int, str] = {}
        for i, call in enumerate(calls):
            try:
                encoded[i] = encode_body({**call.payload, "uid": uuids[i]})
            except PermanentDeliveryError as exc:
                results[i] = exc
        if encoded:
            response = await self.call(
                "PUT", "/tasks/batch", content='{"items": [' + ", ".join(encoded.values()) + "]}"
            )
            for i, result in zip(encoded, _per_item(response, len(encoded)), strict=True):
                if isinstance(result, Delivered):
                    result = Delivered(result.http_status, uuids[i], result.response)
                results[i] = result
        return [results[i] for i in range(len(calls))]


def _per_item(response: httpx.Response, count: int) -> list[Delivered | DeliveryError]:
    """Per-item outcomes of a 2xx batch response (see the module docstring). An answer that
    cannot be read per item raises: delivery then sends the calls one at a time (idempotent
    PUTs), each with an answer of its own, instead of counting them as delivered unseen."""
    data = json_body(response)
    answered = data.get("items") if isinstance(data, dict) else None
    if not isinstance(answered, list) or len(answered) != count:
        got = f"{len(answered)} items" if isinstance(answered, list) else "no items list"
        raise PermanentDeliveryError(
            f"HTTP {response.status_code} from PUT /tasks/batch: the answer cannot be read per"
            f" item ({got} for {count}); sending them one at a time",
            http_status=response.status_code,
        )
    out: list[Delivered | DeliveryError] = []
    for item in answered:
        status = item.get("status") if isinstance(item, dict) else None
        if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
            assert isinstance(item, dict)
            message = f"HTTP {status} for this item of PUT /tasks/batch: {item.get('detail', '')}"
            error = classify(status, 1.0 if status == 429 else None, message)
            assert error is not None
            out.append(error)
        else:
            out.append(Delivered(response.status_code, response=item))
    return out
