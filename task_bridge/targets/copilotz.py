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
from task_bridge.targets.base import Call, Delivered, TargetDeps
from task_bridge.targets.http import NO_BODY, HttpTarget, TargetConfigBase, json_body
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
    """Copilotz: workflow tasks with steps (`advance`), found again by `extId`."""
    base_url: str = DEFAULT_BASE_URL
    """Copilotz's API base URL."""
    username: str
    """Login user; the bridge logs in for a bearer token and again when it expires."""
    password: SecretStr
    """Login password (a secret: use `${COPILOTZ_PASSWORD}`)."""
    namespace: str
    """Login namespace."""

    OPS = frozenset({"create", "upsert", "update", "close", "advance"})

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


class CopilotzTarget(HttpTarget):
    """Authorization is per call (a login token that expires); `self.headers` carries none."""

    kind = "copilotz"
    config: CopilotzConfig

    def __init__(self, name: str, config: CopilotzConfig, deps: TargetDeps) -> None:
        super().__init__(name, config, deps)
        self._token: str | None = None
        self._expires = datetime(1970, 1, 1, tzinfo=UTC)  # no token yet
        self._login_lock = asyncio.Lock()

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
            response = await self.call("POST", "/api/auth/login", body)
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
            auth = {"Authorization": f"Bearer {token}"}
            try:
                return await self.call(
                    method, path, NO_BODY if body is None else body, headers=auth
                )
            except PermanentDeliveryError as exc:
                if exc.http_status != 401 or attempt == 2:
                    raise
                token = await self._login(token)
        raise AssertionError("unreachable")

    # -- operations ------------------------------------------------------------------------------

    async def send(self, call: Call) -> Delivered:
        remote_id = await self.store.get_remote_id(self.name, call.uid)
        if remote_id is None:
            found = await self._find(call.uid)
            if found is not None:
                remote_id = str(found["_id"])
                await self.store.set_remote_id(self.name, call.uid, remote_id)
        body: dict[str, Any] = dict(call.payload)
        if call.op in ("create", "upsert") and remote_id is None:
            response = await self._call("POST", "/rest/tasks", {**body, "extId": call.uid})
            data = json_body(response)
            new_id = data.get("_id") if isinstance(data, dict) else None
            if new_id is None:
                raise PermanentDeliveryError("copilotz create answered without an _id")
            return Delivered(response.status_code, str(new_id), data)
        if remote_id is None:
            raise PermanentDeliveryError(f"no copilotz task with extId '{call.uid}' to {call.op}")
        if call.op == "close":
            body = {"status": "completed"}
        elif call.op == "advance":
            current = await self._find(call.uid)
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
