"""`kind: http`: any REST task API described in YAML.

Per operation: `method`, `path`, `headers` and `body` (Jinja templates over `uid`, `op`,
`op_id`, `task` (the rendered action payload) and `remote_id` (what an earlier create
returned, from the task map)), the `success` statuses, and where the remote id sits in the
response (`remote_id: data.id`). With `idempotency_key: true` every request carries
`Idempotency-Key: <op id>`, so an API that honours it sees a retried create once.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from task_bridge.errors import PermanentDeliveryError
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.outbox.base import StoredOp
from task_bridge.rules.budget import RenderLimitError
from task_bridge.rules.templates import Renderer, Templates
from task_bridge.targets.base import Delivered, TargetStore
from task_bridge.targets.http import TargetConfigBase, json_body, request, user_agent

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class HttpOpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "POST"
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = "{{ task }}"
    success: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    remote_id: str | None = None
    """Dotted path of the task's id in the response (e.g. `id`, `data.id`)."""


class HttpTargetConfig(TargetConfigBase):
    kind: Literal["http"]
    token: SecretStr | None = None
    auth_scheme: str = "Bearer"
    headers: dict[str, str] = Field(default_factory=dict)
    idempotency_key: bool = False
    ops: dict[str, HttpOpConfig] = Field(min_length=1)


class _CompiledOp:
    def __init__(self, spec: HttpOpConfig, templates: Templates) -> None:
        self.spec = spec
        self.path = templates.text(spec.path)
        self.headers = {k: templates.text(v) for k, v in spec.headers.items()}
        self.body: Renderer | None = None if spec.body is None else templates.value(spec.body)
        self.uses_remote_id = "remote_id" in spec.path or "remote_id" in str(spec.body)


class GenericHttpTarget:
    kind = "http"

    def __init__(
        self, name: str, config: HttpTargetConfig, client: httpx.AsyncClient, store: TargetStore
    ) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.store = store
        self.base_url = config.base_url.rstrip("/")
        self.templates = Templates()
        self.ops = {op: _CompiledOp(spec, self.templates) for op, spec in config.ops.items()}
        self.supported_ops = frozenset(config.ops)
        self._headers = {"Content-Type": "application/json", "User-Agent": user_agent()}
        self._headers.update(config.headers)
        if config.token is not None:
            self._headers["Authorization"] = (
                f"{config.auth_scheme} {config.token.get_secret_value()}"
            )

    def __repr__(self) -> str:
        return f"GenericHttpTarget(name={self.name!r}, base_url={self.base_url!r})"

    async def send(self, op: StoredOp) -> Delivered:
        compiled = self.ops.get(op.op)
        if compiled is None:
            raise PermanentDeliveryError(f"target '{self.name}' has no '{op.op}' operation")
        remote_id = self.store.get_remote_id(self.name, op.uid)
        if compiled.uses_remote_id and remote_id is None:
            raise PermanentDeliveryError(
                f"no remote id known for uid '{op.uid}' (its create has not been delivered)"
            )
        ctx = self.templates.context(
            {
                "uid": op.uid,
                "op": op.op,
                "op_id": op.op_id,
                "task": op.payload,
                "remote_id": remote_id,
            }
        )
        self.templates.budget.start()
        try:
            path = compiled.path(ctx)
            headers = {**self._headers, **{k: r(ctx) for k, r in compiled.headers.items()}}
            body = None if compiled.body is None else compiled.body(ctx)
            content = None if body is None else dumps_payload(body)
        except PayloadError as exc:
            raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc
        except RenderLimitError as exc:
            raise PermanentDeliveryError(f"request templates: {exc}") from exc
        except Exception as exc:  # the user's template failed for this op
            raise PermanentDeliveryError(f"template: {type(exc).__name__}: {exc}") from exc
        if self.config.idempotency_key:
            headers["Idempotency-Key"] = op.op_id
        response = await request(
            self.client,
            compiled.spec.method,
            f"{self.base_url}{path}",
            content=content,
            headers=headers,
            timeout=self.config.timeout,
        )
        if response.status_code not in compiled.spec.success:
            raise PermanentDeliveryError(
                f"HTTP {response.status_code} from {compiled.spec.method} {path}: not one of"
                f" the success statuses {compiled.spec.success}",
                http_status=response.status_code,
            )
        data = json_body(response)
        found = _dig(data, compiled.spec.remote_id) if compiled.spec.remote_id else None
        return Delivered(response.status_code, None if found is None else str(found), data)

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
