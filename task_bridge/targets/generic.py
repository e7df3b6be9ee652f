"""`kind: http`: any REST task API described in YAML.

Per operation: `method`, `path`, `headers` and `body` (Jinja templates over `uid`, `op`,
`op_id`, `task` (the rendered action payload) and `remote_id` (what an earlier create
returned, from the task map)), the `success` statuses, and where the remote id sits in the
response (`remote_id: data.id`). With `idempotency_key: true` every request carries
`Idempotency-Key: <op id>`, so an API that honours it sees a retried create once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from task_bridge.errors import PermanentDeliveryError
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.targets.base import Call, Delivered, TargetDeps
from task_bridge.targets.http import HttpTarget, TargetConfigBase, json_body, request
from task_bridge.templating import Renderer, RenderLimitError, Templates

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class HttpOpConfig(BaseModel):
    """One operation of a `kind: http` target: the request it makes."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    method: Method = "POST"
    """HTTP method."""
    path: str
    """Path after `base_url`, a template over `uid`, `op`, `op_id`, `task`, `remote_id`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers of this operation (values are templates)."""
    body: Any = "{{ task }}"
    """JSON body, templates allowed; `null` sends none. Default: the action's rendered task."""
    success: list[int] = Field(default_factory=lambda: [200, 201, 202, 204])
    """Statuses that mean done. Another 2xx/3xx is a permanent failure; 4xx and 5xx are
    classified as for every target (transient ones retried)."""
    remote_id: str | None = None
    """Dotted path of the task's id in the response (e.g. `id`, `data.id`)."""


class HttpTargetConfig(TargetConfigBase):
    kind: Literal["http"]
    """Any REST task API, described per operation in `ops`."""
    token: SecretStr | None = None
    """Sent as `Authorization: <auth_scheme> <token>` (a secret); None: no such header."""
    auth_scheme: str = "Bearer"
    """Scheme word before the token in `Authorization`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers of every request (credential-looking ones are masked in logs)."""
    idempotency_key: bool = False
    """Send `Idempotency-Key: <op id>` with every request."""
    ops: dict[str, HttpOpConfig] = Field(min_length=1)
    """The operations rules may use (`create`, `update`, `close`, any name) and their requests."""

    @property
    def supported_ops(self) -> frozenset[str]:
        return frozenset(self.ops)


class _CompiledOp:
    def __init__(self, spec: HttpOpConfig, templates: Templates) -> None:
        self.spec = spec
        self.path = templates.text(spec.path)
        self.headers = {k: templates.text(v) for k, v in spec.headers.items()}
        self.body: Renderer | None = None if spec.body is None else templates.value(spec.body)
        self.uses_remote_id = "remote_id" in spec.path or "remote_id" in str(spec.body)


class GenericHttpTarget(HttpTarget):
    kind = "http"
    config: HttpTargetConfig

    def __init__(self, name: str, config: HttpTargetConfig, deps: TargetDeps) -> None:
        super().__init__(name, config, deps)
        self.templates = deps.templates
        self.ops = {op: _CompiledOp(spec, self.templates) for op, spec in config.ops.items()}
        self.headers.update(config.headers)

    def auth_headers(self) -> dict[str, str]:
        if self.config.token is None:
            return {}
        return {
            "Authorization": f"{self.config.auth_scheme} {self.config.token.get_secret_value()}"
        }

    async def send(self, call: Call) -> Delivered:
        compiled = self.ops.get(call.op)
        if compiled is None:
            raise PermanentDeliveryError(f"target '{self.name}' has no '{call.op}' operation")
        remote_id = await self.store.get_remote_id(self.name, call.uid)
        if compiled.uses_remote_id and remote_id is None:
            raise PermanentDeliveryError(
                f"no remote id known for uid '{call.uid}' (its create has not been delivered)"
            )
        ctx = self.templates.context(
            {
                "uid": call.uid,
                "op": call.op,
                "op_id": call.op_id,
                "task": call.payload,
                "remote_id": remote_id,
            }
        )
        self.templates.budget.start()
        try:
            path = compiled.path(ctx)
            headers = {**self.headers, **{k: r(ctx) for k, r in compiled.headers.items()}}
            body = None if compiled.body is None else compiled.body(ctx)
            content = None if body is None else dumps_payload(body)
        except PayloadError as exc:
            raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc
        except RenderLimitError as exc:
            raise PermanentDeliveryError(f"request templates: {exc}") from exc
        except Exception as exc:  # the user's template failed for this op
            raise PermanentDeliveryError(f"template: {type(exc).__name__}: {exc}") from exc
        if self.config.idempotency_key:
            headers["Idempotency-Key"] = call.op_id
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


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
