"""The `source:` section of `bridge.yaml`: one of `postgres` or `kafka` (models only; the
sources that read them live beside this module)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from task_bridge import defaults
from task_bridge.durations import Duration
from task_bridge.sources.kafka_connect import declared_type


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PostgresSourceConfig(_Model):
    """Postgres logical replication (pgoutput) over one replication slot."""

    dsn: SecretStr
    """libpq connection string or URL of the database (`${DATABASE_URL}`); the role needs
    REPLICATION. A secret: its password never reaches logs."""
    slot: str = defaults.SLOT
    """Logical replication slot; created when missing."""
    publication: str = defaults.PUBLICATION
    """Publication for the tables the rules name; created when missing, altered when that
    set changes, never dropped."""
    snapshot: Literal["never"] = "never"
    """Existing rows are not emitted at start (`never`, the only value for now): the stream
    starts at the slot's position."""
    status_interval: Duration = defaults.STATUS_INTERVAL_S
    """How often the bridge reports its position to the server and, when the stream is quiet,
    confirms the server's keepalive position (so an idle slot holds no WAL)."""
    lag_warn_bytes: int = defaults.LAG_WARN_BYTES
    """WAL the slot may hold (bytes) before the periodic check logs a `slot.lag` warning."""


def _pg_type(text: str) -> str:
    declared_type(text)  # ValueError names the known types
    return text


PgType = Annotated[str, AfterValidator(_pg_type)]
"""A Postgres column type that `task_bridge.sources.kafka_connect.declared_type` knows."""


class KafkaSourceConfig(_Model):
    """Debezium change events (or plain JSON rows) from Kafka topics."""

    bootstrap_servers: list[str] | str
    """`host:port`, or a list of them."""
    topics: list[str] = Field(default_factory=list)
    """Topics to read (for Debezium: `<prefix>.<schema>.<table>`)."""
    topic_pattern: str | None = None
    """A regex of topics to follow instead of (or besides) `topics`."""
    group_id: str = defaults.GROUP_ID
    """Consumer group; bridges sharing it split the partitions."""
    format: Literal["debezium", "json"] = "debezium"
    """`debezium` envelopes (with or without `schemas.enable`), or plain `json` rows."""
    json_mapping: dict[str, str] | None = None
    """For `format: json`: where table/op/before/after/key sit in a record."""
    client: dict[str, Any] = Field(default_factory=dict)
    """Passed to kafka-python's KafkaConsumer as is (security_protocol, sasl_*, ssl_*...)."""
    column_types: dict[str, dict[str, PgType]] = Field(default_factory=dict)
    """`schema.table` -> column -> Postgres type, for records without a schema (README, Kafka)."""
    heartbeat_topic_prefix: str = "__debezium-heartbeat"
    """Topics starting with this are Debezium heartbeats: read and skipped."""
    max_poll_records: int = Field(2000, ge=1)
    """Most records one poll returns (one outbox transaction at most)."""

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
    """Exactly one of `postgres` or `kafka`."""

    postgres: PostgresSourceConfig | None = None
    """Read a Postgres database's logical replication stream."""
    kafka: KafkaSourceConfig | None = None
    """Read Kafka topics."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceConfig:
        if (self.postgres is None) == (self.kafka is None):
            raise ValueError("configure exactly one of postgres | kafka")
        return self
