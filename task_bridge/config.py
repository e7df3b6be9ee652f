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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from task_bridge.durations import Duration
from task_bridge.errors import ConfigError
from task_bridge.redaction import secret_values
from task_bridge.rules.budget import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_SECONDS,
    DEFAULT_MAX_STEPS,
    RenderBudget,
)
from task_bridge.sources.connect import declared_type
from task_bridge.targets import TARGET_CONFIGS, TARGET_KINDS, TargetConfig
from task_bridge.yamlsrc import (
    KeyPath,
    YamlDoc,
    YamlSyntaxError,
    did_you_mean,
    format_path,
    load_yaml_file,
)

DEFAULT_SLOT = "task_bridge"
DEFAULT_PUBLICATION = "task_bridge"
DEFAULT_OUTBOX_URL = "sqlite:///outbox.db"
DEFAULT_CONCURRENCY = 32
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_STATUS_INTERVAL_S = 10.0
DEFAULT_LAG_WARN_BYTES = 1 << 30
DEFAULT_RETENTION_S = 7 * 86400.0
DEFAULT_SHUTDOWN_GRACE_S = 15.0
DEFAULT_GROUP_ID = "task-bridge"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSourceConfig(_Model):
    dsn: SecretStr
    slot: str = DEFAULT_SLOT
    publication: str = DEFAULT_PUBLICATION
    snapshot: Literal["never"] = "never"
    status_interval: Duration = DEFAULT_STATUS_INTERVAL_S
    lag_warn_bytes: int = DEFAULT_LAG_WARN_BYTES


def _pg_type(text: str) -> str:
    declared_type(text)  # ValueError names the known types
    return text


PgType = Annotated[str, AfterValidator(_pg_type)]
"""A Postgres column type that `task_bridge.sources.connect.declared_type` knows."""


class KafkaSourceConfig(_Model):
    bootstrap_servers: list[str] | str
    topics: list[str] = Field(default_factory=list)
    topic_pattern: str | None = None
    """A regex of topics to follow instead of (or besides) `topics`."""
    group_id: str = DEFAULT_GROUP_ID
    format: Literal["debezium", "json"] = "debezium"
    json_mapping: dict[str, str] | None = None
    """For `format: json`: where table/op/before/after/key sit in a record."""
    client: dict[str, Any] = Field(default_factory=dict)
    """Passed to kafka-python's KafkaConsumer as is (security_protocol, sasl_*, ssl_*...)."""
    column_types: dict[str, dict[str, PgType]] = Field(default_factory=dict)
    """`schema.table` -> column -> Postgres type, for records without a schema (README, Kafka)."""
    heartbeat_topic_prefix: str = "__debezium-heartbeat"
    max_poll_records: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _some_topics(self) -> KafkaSourceConfig:
        if not self.topics and not self.topic_pattern:
            raise ValueError("kafka: name `topics` or a `topic_pattern`")
        if self.format == "json" and not self.json_mapping:
            raise ValueError("kafka: format json needs a `json_mapping` (at least `table`)")
        return self

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, ("***" if key == "client" and value else value)


class SourceConfig(_Model):
    postgres: PostgresSourceConfig | None = None
    kafka: KafkaSourceConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceConfig:
        if (self.postgres is None) == (self.kafka is None):
            raise ValueError("configure exactly one of postgres | kafka")
        return self


class OutboxConfig(_Model):
    url: SecretStr = SecretStr(DEFAULT_OUTBOX_URL)
    """A Postgres URL holds a password."""
    retention: Duration = DEFAULT_RETENTION_S


class RetryConfig(_Model):
    max_attempts: int = Field(12, ge=1)
    initial_backoff: Duration = 0.5
    max_backoff: Duration = 300.0
    max_age: Duration = 86400.0


class DeliveryConfig(_Model):
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=1024)
    timeout: Duration = DEFAULT_TIMEOUT_S
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE_S
    retry: RetryConfig = RetryConfig()


class LimitsConfig(_Model):
    """Bounds on what the rules may cost for one event (G11): past one, that operation is
    dead-lettered with the reason and everything else goes on."""

    payload_bytes: int = Field(DEFAULT_MAX_CHARS, ge=1024)
    """Largest rendered payload of one operation (and any one rendered text in it)."""
    render_steps: int = Field(DEFAULT_MAX_STEPS, ge=100)
    """Steps (calls, attribute reads, operators, `range` items, output parts) one event's
    templates may take."""
    render_time: Duration = DEFAULT_MAX_SECONDS
    """Time one event's templates may take."""

    def budget(self) -> RenderBudget:
        return RenderBudget(self.render_steps, self.render_time, self.payload_bytes)


class BridgeConfig(_Model):
    source: SourceConfig
    outbox: OutboxConfig = OutboxConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    rules: str | list[dict[str, Any]] = "rules/"
    limits: LimitsConfig = LimitsConfig()


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
    if len(path) > 2 and path[0] == "targets" and path[2] in TARGET_KINDS:
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
        return sorted({key for cfg in TARGET_CONFIGS for key in cfg.model_fields})
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
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(doc, tuple(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        raise ConfigError(problems[0], problems) from exc
    return LoadedConfig(config=config, path=path.resolve(), doc=doc)
