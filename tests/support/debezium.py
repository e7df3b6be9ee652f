"""Encode a `ChangeEvent` as the Kafka record Debezium's PostgreSQL connector writes for it
(JsonConverter, `schemas.enable` true or false), for parity tests of the Kafka source.

Only the column types the parity tests use; encodings from `shared/reference/debezium_format.md`
(numeric -> Connect `Decimal` as base64 of the unscaled two's-complement integer, timestamptz ->
`ZonedTimestamp` ISO text in UTC, jsonb -> `Json` text, uuid -> `Uuid` text, arrays -> arrays,
an unchanged TOAST value -> `__debezium_unavailable_value`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from task_bridge.events import UNCHANGED, ChangeEvent

MARKER = "__debezium_unavailable_value"
_OPS = {"insert": "c", "update": "u", "delete": "d", "snapshot": "r"}


def _decimal_bytes(value: Decimal, scale: int) -> str:
    unscaled = int(value.scaleb(scale))
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def _zoned(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# pg type -> (Connect schema, value encoder with schema, value as decimal.handling.mode=string)
Column = tuple[dict[str, Any], Callable[[Any], Any], Callable[[Any], Any]]


def _same(value: Any) -> Any:
    return value


def column(pg_type: str) -> Column:
    if pg_type == "bigint":
        return {"type": "int64"}, _same, _same
    if pg_type == "text":
        return {"type": "string"}, _same, _same
    if pg_type.startswith("numeric("):
        precision, scale = (int(p) for p in pg_type[len("numeric(") : -1].split(","))
        schema = {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": str(scale), "connect.decimal.precision": str(precision)},
        }
        return schema, lambda v: _decimal_bytes(v, scale), str
    if pg_type == "timestamptz":
        return (
            {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1},
            _zoned,
            _zoned,
        )
    if pg_type == "jsonb":
        return (
            {"type": "string", "name": "io.debezium.data.Json", "version": 1},
            json.dumps,
            json.dumps,
        )
    if pg_type == "uuid":
        return {"type": "string", "name": "io.debezium.data.Uuid", "version": 1}, str, str
    if pg_type == "text[]":
        return {"type": "array", "items": {"type": "string", "optional": True}}, _same, _same
    raise ValueError(f"no Debezium encoding here for {pg_type}")


def _row(
    row: dict[str, Any] | None, types: dict[str, str], with_schema: bool
) -> dict[str, Any] | None:
    if row is None:
        return None
    out: dict[str, Any] = {}
    for name, pg_type in types.items():
        value = row.get(name)
        _schema, typed, plain = column(pg_type)
        if value is UNCHANGED:
            out[name] = [MARKER] if pg_type.endswith("[]") else MARKER
        elif value is None:
            out[name] = None
        else:
            out[name] = typed(value) if with_schema else plain(value)
    return out


def _struct(name: str, types: dict[str, str], field: str, key: frozenset[str]) -> dict[str, Any]:
    fields = [
        {**column(pg_type)[0], "optional": col not in key, "field": col}
        for col, pg_type in types.items()
    ]
    return {"type": "struct", "fields": fields, "optional": True, "name": name, "field": field}


def encode(
    event: ChangeEvent, types: dict[str, str], *, with_schema: bool, server: str = "app"
) -> tuple[bytes, bytes]:
    """(key, value) of the Debezium record for `event` (`types`: column -> pg type)."""
    key_types = {name: types[name] for name in event.key}
    assert event.commit_time is not None
    micros = (event.commit_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    payload = {
        "before": _row(event.before, types, with_schema),
        "after": _row(event.after, types, with_schema),
        "source": {
            "version": "2.7.0.Final",
            "connector": "postgresql",
            "name": server,
            "ts_ms": micros // 1000,
            "ts_us": micros,
            "snapshot": "false",
            "db": "app",
            "schema": event.schema,
            "table": event.table,
            "txId": event.txid,
            "lsn": event.position.lsn,
        },
        "op": _OPS[event.op],
        "ts_ms": micros // 1000 + 5,
    }
    key_payload = _row(event.key, key_types, with_schema)
    if not with_schema:
        return json.dumps(key_payload).encode(), json.dumps(payload).encode()
    prefix = f"{server}.{event.schema}.{event.table}"
    value_schema = {
        "type": "struct",
        "name": f"{prefix}.Envelope",
        "optional": False,
        "fields": [
            _struct(f"{prefix}.Value", types, "before", frozenset(event.key)),
            _struct(f"{prefix}.Value", types, "after", frozenset(event.key)),
            {
                "type": "struct",
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source",
                "optional": False,
                "fields": [],
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
    }
    key_schema = _struct(f"{prefix}.Key", key_types, "key", frozenset(key_types))
    key_schema.pop("field")
    key = {"schema": key_schema, "payload": key_payload}
    value = {"schema": value_schema, "payload": payload}
    return json.dumps(key).encode(), json.dumps(value).encode()
