"""Copilotz: tasks that move through workflow steps (`currentStep`, `status`, `context`).

Auth: `POST {base}/api/auth/login {username, password, namespace}` gives a bearer token with
an `expiresAt`; the target logs in again when it expires or a 401 comes back. A create sends
`extId = uid`; the returned `_id` is kept in the task map for `PUT /rest/tasks/{id}`. The API
promises no uniqueness of `extId`, so before a create whose id is unknown the target looks
the task up by `extId` (`GET /rest/tasks?extId=`): an earlier ambiguous attempt is found, not
duplicated (G3). `close` sets `status: completed`; `advance` sets `currentStep`/`status` and
merges `context` into the task's current one.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from task_bridge.errors import PermanentDeliveryError, TransientDeliveryError
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.outbox.base import StoredOp
from task_bridge.targets.base import Delivered, TargetStore
from task_bridge.targets.http import TargetConfigBase, json_body, request, user_agent
from task_bridge.yamlsrc import did_you_mean

DEFAULT_BASE_URL = "https://copilotz.com"
TASK_KEYS = frozenset(
    {"workflow", "currentStep", "status", "name", "description", "context", "extId"}
)
CREATE_REQUIRED = ("workflow", "currentStep", "status", "name", "description")
STATUSES = ("active", "pending", "failed", "completed")
TOKEN_MARGIN = timedelta(seconds=30)


class CopilotzConfig(TargetConfigBase):
    kind: Literal["copilotz"]
    base_url: str = DEFAULT_BASE_URL
    username: str
    password: SecretStr
    namespace: str


class CopilotzTarget:
    kind = "copilotz"
    supported_ops = frozenset({"create", "upsert", "update", "close", "advance"})

    def __init__(
        self, name: str, config: CopilotzConfig, client: httpx.AsyncClient, store: TargetStore
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.store = store
        self.base_url = config.base_url.rstrip("/")
        self._token: str | None = None
        self._expires = datetime(1970, 1, 1, tzinfo=UTC)  # no token yet
        self._login_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"CopilotzTarget(name={self.name!r}, base_url={self.base_url!r})"

    # -- auth ------------------------------------------------------------------------------------

    async def _login(self, stale: str | None) -> str:
        async with self._login_lock:
            fresh = datetime.now(UTC) < self._expires - TOKEN_MARGIN
            if self._token is not None and self._token != stale and fresh:
                return self._token  # another request logged in meanwhile
            body = {
                "username": self.config.username,
                "password": self.config.password.get_secret_value(),
                "namespace": self.config.namespace,
            }
            response = await request(
                self.client,
                "POST",
                f"{self.base_url}/api/auth/login",
                content=dumps_payload(body),
                headers={"Content-Type": "application/json", "User-Agent": user_agent()},
                timeout=self.config.timeout,
            )
            data = json_body(response) or {}
            token = data.get("accessToken") if isinstance(data, dict) else None
            if not isinstance(token, str):
                raise TransientDeliveryError("copilotz login answered without an accessToken")
            self._token = token
            self._expires = _parse_expiry(data.get("expiresAt"))
            return token

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One authenticated call; a 401 logs in again once and repeats it."""
        token = self._token
        if token is None or datetime.now(UTC) >= self._expires - TOKEN_MARGIN:
            token = await self._login(token)
        for attempt in (1, 2):
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": user_agent(),
            }
            try:
                return await request(
                    self.client,
                    method,
                    f"{self.base_url}{path}",
                    content=None if body is None else _encode(body),
                    headers=headers,
                    timeout=self.config.timeout,
                )
            except PermanentDeliveryError as exc:
                if exc.http_status != 401 or attempt == 2:
                    raise
                token = await self._login(token)
        raise AssertionError("unreachable")

    # -- operations ------------------------------------------------------------------------------

    async def send(self, op: StoredOp) -> Delivered:
        remote_id = self.store.get_remote_id(self.name, op.uid)
        if remote_id is None:
            found = await self._find(op.uid)
            if found is not None:
                remote_id = str(found["_id"])
                self.store.set_remote_id(self.name, op.uid, remote_id)
        body: dict[str, Any] = dict(op.payload)
        if op.op in ("create", "upsert") and remote_id is None:
            response = await self._call("POST", "/rest/tasks", {**body, "extId": op.uid})
            data = json_body(response)
            new_id = data.get("_id") if isinstance(data, dict) else None
            if new_id is None:
                raise PermanentDeliveryError("copilotz create answered without an _id")
            return Delivered(response.status_code, str(new_id), data)
        if remote_id is None:
            raise PermanentDeliveryError(f"no copilotz task with extId '{op.uid}' to {op.op}")
        if op.op == "close":
            body = {"status": "completed"}
        elif op.op == "advance":
            current = await self._find(op.uid)
            context = dict((current or {}).get("context") or {})
            context.update(body.get("context") or {})
            body = {**body, "context": context}
        response = await self._call("PUT", f"/rest/tasks/{remote_id}", body)
        return Delivered(response.status_code, remote_id, json_body(response))

    async def _find(self, uid: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/rest/tasks?{urlencode({'extId': uid})}")
        data = json_body(response)
        items = data.get("data") if isinstance(data, dict) else data
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("extId") == uid and "_id" in item:
                    return item
        return None

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        problems = [
            f"task.{key}: unknown Copilotz task key{did_you_mean(key, TASK_KEYS)}"
            for key in task
            if key not in TASK_KEYS
        ]
        if op == "create":
            problems += [
                f"task.{key}: required by Copilotz" for key in CREATE_REQUIRED if key not in task
            ]
        if op == "advance" and "currentStep" not in task:
            problems.append("task.currentStep: advance needs the step to move to")
        status = task.get("status")
        if isinstance(status, str) and "{" not in status and status not in STATUSES:
            problems.append(f"task.status: must be one of {', '.join(STATUSES)}")
        if "extId" in task:
            problems.append("task.extId: set from the action's uid; remove it")
        return problems

    async def aclose(self) -> None:
        return None


def _encode(body: Any) -> str:
    try:
        return dumps_payload(body)
    except PayloadError as exc:
        raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc


def _parse_expiry(value: Any) -> datetime:
    """`expiresAt` (ISO) -> aware datetime; unknown -> treat the token as good for 5 minutes."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC) + timedelta(minutes=5)
