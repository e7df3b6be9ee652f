"""Typed configuration (`bridge.yaml`): ${ENV} expansion, durations, file:line errors.

Shorthand is accepted on input (`10s`, `60/min`) but stored in one shape (seconds, per-second
rates). Defaults are named constants. Secrets are `SecretStr` and never printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
)

from task_bridge import defaults
from task_bridge.durations import Duration
from task_bridge.errors import ConfigError
from task_bridge.redaction import secret_values
from task_bridge.sources.config import SourceConfig
from task_bridge.targets import REGISTRY, TargetConfigBase
from task_bridge.templating.budget import RenderBudget
from task_bridge.yamlsrc import (
    KeyPath,
    YamlDoc,
    YamlSyntaxError,
    did_you_mean,
    format_path,
    load_yaml_file,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class OutboxConfig(_Model):
    """Where operations wait for delivery, with the source's checkpoint."""

    url: SecretStr = SecretStr(defaults.OUTBOX_URL)
    """`sqlite:///outbox.db` (relative to bridge.yaml), `sqlite:////abs/path.db`, or
    `postgresql://user:pass@host/db?schema=task_bridge` (shared by several bridges). A secret:
    its password never reaches logs."""
    retention: Duration = defaults.RETENTION_S
    """How long delivered operations are kept before the periodic purge deletes them."""


class RetryConfig(_Model):
    """When a transient failure is tried again, and when the bridge gives up (op `dead`)."""

    max_attempts: int = Field(defaults.MAX_ATTEMPTS, ge=1)
    """Attempts (the first included) before an operation is dead-lettered."""
    initial_backoff: Duration = defaults.INITIAL_BACKOFF_S
    """Backoff before the second attempt; it doubles each time, with full jitter."""
    max_backoff: Duration = defaults.MAX_BACKOFF_S
    """Longest wait between two attempts (a `Retry-After` from the API can ask for more)."""
    max_age: Duration = defaults.MAX_AGE_S
    """An operation still failing this long after it was enqueued is dead-lettered."""


class DeliveryConfig(_Model):
    """How operations are sent to the targets."""

    concurrency: int = Field(defaults.CONCURRENCY, ge=1, le=1024)
    """Requests in flight at once, over all targets (different task UIDs only: one task's
    operations go one at a time)."""
    timeout: Duration = defaults.TIMEOUT_S
    """Per-request timeout (a target's own `timeout` overrides it)."""
    shutdown_grace: Duration = defaults.SHUTDOWN_GRACE_S
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish before the bridge
    exits anyway (their operations are sent again after the restart)."""
    retry: RetryConfig = RetryConfig()
    """Backoff and give-up policy for transient failures."""


class LimitsConfig(_Model):
    """Bounds on what the rules may cost for one event (G11): past one, that operation is
    dead-lettered with the reason and everything else goes on."""

    payload_bytes: int = Field(defaults.PAYLOAD_BYTES, ge=1024)
    """Largest rendered payload of one operation (and any one rendered text in it)."""
    render_steps: int = Field(defaults.RENDER_STEPS, ge=100)
    """Steps (calls, attribute reads, operators, `range` items, output parts) one event's
    templates may take."""
    render_time: Duration = defaults.RENDER_TIME_S
    """Time one event's templates may take."""

    def budget(self) -> RenderBudget:
        return RenderBudget(self.render_steps, self.render_time, self.payload_bytes)


class BridgeConfig(_Model):
    """`bridge.yaml`: one source, one outbox, the targets and the rules."""

    source: SourceConfig
    """Where change events come from: exactly one of `postgres` or `kafka`."""
    outbox: OutboxConfig = OutboxConfig()
    """The durable outbox (SQLite file or Postgres schema)."""
    delivery: DeliveryConfig = DeliveryConfig()
    """Concurrency, timeouts and retries of delivery."""
    targets: dict[str, TargetConfigBase] = Field(default_factory=dict)
    """Task APIs by the name rules use in `target:`; each one's `kind` picks its other keys
    (`config_model` types them by the registered kinds)."""
    rules: str | list[dict[str, Any]] = "rules/"
    """A directory of `*.yaml` rule files (relative to bridge.yaml), one file, or an inline
    list of rules."""
    limits: LimitsConfig = LimitsConfig()
    """Bounds on what rules may cost per event."""


_MODELS: dict[tuple[type[TargetConfigBase], ...], type[BridgeConfig]] = {}


def config_model() -> type[BridgeConfig]:
    """`BridgeConfig` with `targets` typed by the target kinds registered now
    (`task_bridge.targets.register`): a tagged union on `kind`."""
    configs = tuple(kind.config for kind in REGISTRY.values())
    model = _MODELS.get(configs)
    if model is None:
        union: Any = Union[configs]  # noqa: UP007  # a union built at run time
        tagged = Annotated[union, Field(discriminator="kind")]
        model = create_model(
            "BridgeConfig",
            __base__=BridgeConfig,
            targets=(
                dict[str, tagged],
                Field(
                    default_factory=dict,
                    description=BridgeConfig.model_fields["targets"].description,
                ),
            ),
        )
        _MODELS[configs] = model
    return model


@dataclass(frozen=True)
class LoadedConfig:
    config: BridgeConfig
    path: Path
    doc: YamlDoc

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def secrets(self) -> list[str]:
        """Every secret value anywhere in the config (`redaction.secret_values`)."""
        return sorted(set(secret_values(self.config)))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, doc: YamlDoc, env: Mapping[str, str], path: KeyPath = ()) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string; a missing VAR is a ConfigError."""
    if isinstance(data, dict):
        return {k: expand_env(v, doc, env, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, doc, env, (*path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    if path and path[0] == "rules":
        return data  # rule templates are Jinja; ${...} has no meaning there

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{doc.where(path)}: {format_path(path)}: environment variable {name} is not set"
        )

    return _ENV.sub(sub, data)


def _problem(doc: YamlDoc, loc: tuple[Any, ...], msg: str, err_type: str) -> str:
    path: list[str | int] = [p for p in loc if isinstance(p, str | int)]
    if len(path) > 2 and path[0] == "targets" and path[2] in REGISTRY:
        del path[2]  # the discriminator tag pydantic inserts; not a key the user wrote
    if err_type == "extra_forbidden":
        msg = f"unknown key{did_you_mean(str(path[-1]), _known_keys(tuple(path[:-1])))}"
    elif err_type == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    return f"{doc.where(path)}: {format_path(path)}: {msg}"


def _known_keys(path: tuple[str | int, ...]) -> list[str]:
    model: Any = BridgeConfig
    for part in path:
        if model is None or isinstance(part, int):
            continue
        if model is BridgeConfig and part == "targets":
            model = None
            continue
        field = getattr(model, "model_fields", {}).get(part)
        model = _model_of(field.annotation) if field is not None else None
    if model is None and len(path) == 2 and path[0] == "targets":
        return sorted({key for kind in REGISTRY.values() for key in kind.config.model_fields})
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, expand and validate `bridge.yaml`. Raises ConfigError with file:line problems."""
    env = os.environ if env is None else env
    try:
        doc = load_yaml_file(path)
    except YamlSyntaxError as exc:
        raise ConfigError(str(exc)) from exc
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping with a 'source' key")
    data = expand_env(doc.data, doc, env)
    try:
        config = config_model().model_validate(data)
    except ValidationError as exc:
        problems = [_problem(doc, tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        raise ConfigError(problems[0], problems) from exc
    return LoadedConfig(config=config, path=path.resolve(), doc=doc)
