"""Fragment (onfragment.com): idempotent `PUT /tasks/{uuid}`, `PATCH` to update and close.

The rendered UID becomes the task's UUID as Fragment's "Map task IDs" guide recommends: a UUID
is used as is, any other string becomes `UUID(md5(uid))`.

Fragment allows 60 requests/min, so when several upserts are due they go out as one
`PUT /tasks/batch {"items": [...]}` (idempotent bulk upsert). The batch response is not
documented: an `items` list of the same length is read per item (an item carrying an HTTP-like
`status` >= 400 failed), anything else counts as every item applied. A batch refused as a whole
raises; delivery then sends its ops one at a time, so only a bad item dies.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from task_bridge.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryAfter,
    TransientDeliveryError,
)
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.outbox.base import StoredOp
from task_bridge.targets.base import Delivered
from task_bridge.targets.http import (
    TRANSIENT_STATUSES,
    TargetConfigBase,
    json_body,
    request,
    user_agent,
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
    base_url: str = DEFAULT_BASE_URL
    token: SecretStr
    user_agent: str | None = None
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=1000)
    """Most upserts per `PUT /tasks/batch`; 1 turns batching off."""


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


class FragmentTarget:
    kind = "fragment"
    supported_ops = frozenset({"create", "upsert", "update", "close"})
    batch_ops = BATCH_OPS

    def __init__(self, name: str, config: FragmentConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self.config = config
        self.max_batch = config.batch_size
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
        response = await request(
            self.client,
            method,
            f"{self.base_url}/tasks/{task_uuid}",
            content=_encode(body),
            headers=self._headers,
            timeout=self.config.timeout,
        )
        return Delivered(response.status_code, task_uuid, json_body(response))

    async def send_batch(self, ops: Sequence[StoredOp]) -> list[Delivered | DeliveryError]:
        encoded: dict[int, str] = {}
        results: dict[int, Delivered | DeliveryError] = {}
        uuids = {op.seq: fragment_task_uuid(op.uid) for op in ops}
        for op in ops:
            try:
                encoded[op.seq] = dumps_payload({**op.payload, "uid": uuids[op.seq]})
            except PayloadError as exc:
                results[op.seq] = PermanentDeliveryError(f"payload cannot be encoded: {exc}")
        if encoded:
            response = await request(
                self.client,
                "PUT",
                f"{self.base_url}/tasks/batch",
                content='{"items": [' + ", ".join(encoded.values()) + "]}",
                headers=self._headers,
                timeout=self.config.timeout,
            )
            sent = [op for op in ops if op.seq in encoded]
            for op, result in zip(sent, _per_item(response, len(sent)), strict=True):
                if isinstance(result, Delivered):
                    result = Delivered(result.http_status, uuids[op.seq], result.response)
                results[op.seq] = result
        return [results[op.seq] for op in ops]

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


def _encode(body: Any) -> str:
    try:
        return dumps_payload(body)
    except PayloadError as exc:
        raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc


def _per_item(response: httpx.Response, count: int) -> list[Delivered | DeliveryError]:
    """Per-item outcomes of a 2xx batch response (see the module docstring)."""
    try:
        answered = json_body(response).get("items")
    except AttributeError:
        answered = None
    if not isinstance(answered, list) or len(answered) != count:
        return [Delivered(response.status_code) for _ in range(count)]
    out: list[Delivered | DeliveryError] = []
    for item in answered:
        status = item.get("status") if isinstance(item, dict) else None
        if isinstance(status, int) and status >= 400:
            message = f"HTTP {status} for this item of PUT /tasks/batch: {item.get('detail', '')}"
            if status >= 500 or status in TRANSIENT_STATUSES:
                error: DeliveryError = (
                    RetryAfter(1.0, message, http_status=status)
                    if status == 429
                    else TransientDeliveryError(message, http_status=status)
                )
            else:
                error = PermanentDeliveryError(message, http_status=status)
            out.append(error)
        else:
            out.append(Delivered(response.status_code, response=item))
    return out
