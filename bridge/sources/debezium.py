"""Debezium PostgreSQL change events (Kafka Connect JsonConverter) -> `ChangeEvent`; plain JSON too.

Pure functions, no Kafka: the Kafka source hands each record's key, value and coordinates here.
Facts on the format: `shared/reference/debezium_format.md`.

With `schemas.enable=true` every column is decoded by its Connect schema (`type` and semantic
`name`) to the value the Postgres source gives for the same column (SPEC section 3): numeric ->
`Decimal`, timestamp -> naive `datetime`, timestamptz -> `datetime` in UTC, date, time, interval
(`MicroDuration`) -> `timedelta`, json/jsonb -> parsed, uuid -> `UUID`, bytea -> `bytes`, arrays ->
lists decoded element-wise. `decimal.handling.mode=string|double` gives str/float, made `Decimal`
when the field carries `__debezium.source.column.type` NUMERIC/DECIMAL
(`column.propagate.source.type`). Known differences from pgoutput: Debezium turns a primary-key
change into delete + create; `MicroDuration` counts a month as 30.4375 days (psycopg: 30); nano
precision is cut to microseconds; unknown semantic names decode by their plain Connect type.

Without a schema (`schemas.enable=false`) nothing says what a column is, so values pass as JSON
gives them: decimals arrive as base64 strings (or numbers / `{"scale", "value"}` structs),
timestamps and dates as integers, timestamptz and uuid as strings, json/jsonb as JSON *text*,
bytea as base64 strings. Rules then see these raw forms; use schemas for typed values.

Both ways, Debezium's unchanged-TOAST placeholder `__debezium_unavailable_value` in any of its
per-type forms (string, base64 of it for bytes, `[marker]`, its ASCII codes, its name-UUID) becomes
`UNCHANGED`. Input that cannot be decoded raises `PoisonMessage`; tombstones, heartbeats,
transaction metadata and rowless events (`op: m`, schema changes) give `None`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from bridge.errors import ConfigError, SourceError
from bridge.events import UNCHANGED, ChangeEvent, SourcePosition

MARKER = "__debezium_unavailable_value"
_MARKER_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="  # base64 of MARKER's UTF-8
_MARKER_UUID = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"  # Java UUID.nameUUIDFromBytes(MARKER)
_MARKER_LISTS: tuple[list[Any], ...] = (
    [MARKER],
    [_MARKER_B64],
    [_MARKER_UUID],
    list(MARKER.encode()),  # int[]/bigint[]/date[]: the placeholder's ASCII codes
)
_OPS = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot", "t": "truncate"}
_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_PG_INFINITY = 9223372036825200000  # PGStatement.DATE_POSITIVE_INFINITY, any time unit
_PG_NEG_INFINITY = -9223372036832400000
_NUMERIC_TYPES = ("NUMERIC", "DECIMAL")
_SOURCE_TYPE = "__debezium.source.column.type"
_ROWLESS_KEYS = ("ddl", "tableChanges", "databaseName")  # schema-change / history events

Schema = Mapping[str, Any]


class PoisonMessage(SourceError):
    """A Kafka record that cannot be decoded; `reason` says why (retrying cannot help)."""

    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason


# -- entry points ---------------------------------------------------------------------------------


def decode_debezium(
    key: bytes | None, value: bytes | None, *, topic: str, partition: int, offset: int
) -> ChangeEvent | None:
    """One Kafka record of a Debezium PostgreSQL topic -> a `ChangeEvent`, or None if rowless."""
    if value is None:
        return None  # tombstone after a delete
    try:
        key_doc = _parse(key, "key") if key else None
        value_doc = _parse(value, "value")
    except PoisonMessage as exc:
        raise PoisonMessage(exc.reason, f"{topic}[{partition}]@{offset}") from exc
    return decode_debezium_json(key_doc, value_doc, topic=topic, partition=partition, offset=offset)


def decode_debezium_json(
    key: Any, value: Any, *, topic: str, partition: int, offset: int
) -> ChangeEvent | None:
    """`decode_debezium` for a key and value already parsed from JSON (`bridge dry-run`)."""
    position = SourcePosition(kind="kafka", topic=topic, partition=partition, offset=offset)
    try:
        return _decode_record(key, value, position, topic)
    except PoisonMessage as exc:
        raise PoisonMessage(exc.reason, f"{topic}[{partition}]@{offset}") from exc


def _parse(data: bytes, what: str) -> Any:
    try:
        # exact decimals (decimal.format=NUMERIC); float fields are turned back into float
        return json.loads(data, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoisonMessage(f"{what} is not valid JSON: {exc}") from exc


def _unwrap(doc: Any, what: str) -> tuple[Schema | None, Any]:
    """`{"schema", "payload"}` (schemas.enable=true) -> (schema, payload); else (None, doc)."""
    if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:
        schema = doc["schema"]
        if schema is not None and not isinstance(schema, dict):
            raise PoisonMessage(f"{what} schema is not an object")
        return schema, doc["payload"]
    return None, doc


def _decode_record(
    key_doc: Any, value_doc: Any, position: SourcePosition, topic: str
) -> ChangeEvent | None:
    schema, payload = _unwrap(value_doc, "value")
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise PoisonMessage(f"value payload is {type(payload).__name__}, not an object")
    if "op" not in payload:
        if _rowless(payload, schema, topic):
            return None
        raise PoisonMessage(f"unknown envelope shape (keys: {sorted(payload)[:8]})")
    code = payload["op"]
    if code == "m":
        return None  # pg_logical_emit_message: no row
    op = _OPS.get(code) if isinstance(code, str) else None
    if op is None:
        raise PoisonMessage(f"unknown op {code!r}")
    source = payload.get("source")
    if not isinstance(source, dict):
        raise PoisonMessage("the envelope has no 'source' object")
    table = source.get("table")
    if not isinstance(table, str) or not table:
        raise PoisonMessage("source.table is missing")
    envelope = _fields(schema) if schema is not None else None
    before = _row(payload.get("before"), _row_fields(envelope, "before"), "before")
    after = _row(payload.get("after"), _row_fields(envelope, "after"), "after")
    if op in ("insert", "update", "snapshot") and after is None:
        raise PoisonMessage(f"op {code!r} without an 'after' row")
    return ChangeEvent(
        op=op,
        schema=str(source.get("schema") or "pg_catalog"),
        table=table,
        position=position,
        after=after,
        before=before,
        key={} if op == "truncate" else _key(key_doc),
        commit_time=_commit_time(source),
        txid=_txid(source.get("txId")),
    )


def _rowless(payload: Mapping[str, Any], schema: Schema | None, topic: str) -> bool:
    """Heartbeat, transaction BEGIN/END or schema-change record."""
    if topic.startswith("__debezium-heartbeat") or set(payload) == {"ts_ms"}:
        return True
    if schema is not None and str(schema.get("name", "")).startswith("io.debezium.connector."):
        return True  # common.Heartbeat, common.TransactionMetadataValue, SchemaChangeValue
    if payload.get("status") in ("BEGIN", "END") and "id" in payload:
        return True
    return any(k in payload for k in _ROWLESS_KEYS)


def _key(doc: Any) -> dict[str, Any]:
    """The record key's fields (primary key / replica identity); {} for a keyless table."""
    schema, payload = _unwrap(doc, "key")
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise PoisonMessage(f"key payload is {type(payload).__name__}, not an object")
    return _row(payload, _fields(schema) if schema is not None else None, "key") or {}


def _commit_time(source: Mapping[str, Any]) -> datetime | None:
    """`source.ts_us` (Debezium 2.6+) when present, else `ts_ms`: tz-aware UTC."""
    for name, per_second in (("ts_us", 1_000_000), ("ts_ms", 1000)):
        value = source.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            micros = value * 1_000_000 // per_second
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return None


def _txid(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PoisonMessage(f"source.txId is not an integer: {value!r}")


# -- rows ---------------------------------------------------------------------------------------


def _fields(schema: Schema) -> dict[str, Schema]:
    fields = schema.get("fields")
    if schema.get("type") != "struct" or not isinstance(fields, list):
        raise PoisonMessage(f"schema {schema.get('name')!r} is not a struct with fields")
    return {f["field"]: f for f in fields if isinstance(f, dict) and "field" in f}


def _row(value: Any, fields: dict[str, Schema] | None, what: str) -> dict[str, Any] | None:
    """A row object (before/after/key) decoded by its struct's fields; None stays None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PoisonMessage(f"{what} is {type(value).__name__}, not an object")
    if fields is None:
        return {name: _plain_column(v) for name, v in value.items()}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise PoisonMessage(f"{what}.{unknown[0]} is not in the schema")
    return {name: _column(v, fields[name], f"{what}.{name}") for name, v in value.items()}


def _row_fields(envelope: dict[str, Schema] | None, what: str) -> dict[str, Schema] | None:
    """The struct fields of the envelope's `before`/`after` (None without schemas)."""
    if envelope is None:
        return None
    if what not in envelope:
        raise PoisonMessage(f"the value schema has no {what!r} field")
    return _fields(envelope[what])


def _column(value: Any, schema: Schema, where: str) -> Any:
    if _unavailable(value, schema.get("type")):
        return UNCHANGED
    try:
        return decode_value(value, schema)
    except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
        label = schema.get("name") or schema.get("type")
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise PoisonMessage(f"{where}: cannot decode {label} value {shown}: {exc}") from exc


def _unavailable(value: Any, connect_type: Any = None) -> bool:
    if isinstance(value, str):
        return value == MARKER or (value == _MARKER_B64 and connect_type in (None, "bytes"))
    if isinstance(value, list):
        return value in _MARKER_LISTS
    if isinstance(value, dict):  # hstore as a map; VariableScaleDecimal struct
        return value == {MARKER: MARKER} or value.get("value") == _MARKER_B64
    return False


def _plain_column(value: Any) -> Any:
    return UNCHANGED if _unavailable(value) else _plain(value)


def _plain(value: Any) -> Any:
    """Schemaless: JSON values as `json.loads` gives them (numbers were parsed as Decimal)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -- values by Connect schema ---------------------------------------------------------------------


def decode_value(value: Any, schema: Schema) -> Any:
    """One JSON value -> the Python value pgoutput gives, by its Connect schema."""
    if value is None:
        return None
    name = schema.get("name")
    decoder = _SEMANTIC.get(name) if isinstance(name, str) else None
    if decoder is None:
        decoder = _BY_TYPE.get(schema.get("type"))
    if decoder is None:
        raise ValueError(f"unknown Connect type {schema.get('type')!r}")
    return decoder(value, schema)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a boolean")
    return value


def _numeric_column(schema: Schema) -> bool:
    params = schema.get("parameters") or {}
    return str(params.get(_SOURCE_TYPE, "")).upper() in _NUMERIC_TYPES


def _float(value: Any, schema: Schema) -> float | Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise TypeError("not a number")
    # decimal.handling.mode=double on a numeric column: Decimal, as pgoutput gives
    return Decimal(str(value)) if _numeric_column(schema) else float(value)


def _string(value: Any, schema: Schema) -> str | Decimal:
    # decimal.handling.mode=string on a numeric column: Decimal, as pgoutput gives
    return Decimal(_text(value)) if _numeric_column(schema) else _text(value)


def _array(value: Any, schema: Schema) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not an array")
    return [decode_value(v, schema["items"]) for v in value]


def _map(value: Any, schema: Schema) -> dict[Any, Any]:
    keys, values = schema["keys"], schema["values"]
    pairs = value.items() if isinstance(value, dict) else value  # non-string keys: [[k, v], ...]
    return {decode_value(k, keys): decode_value(v, values) for k, v in pairs}


def _struct(value: Any, schema: Schema) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not an object")
    fields = {f["field"]: f for f in schema.get("fields", [])}
    return {k: decode_value(v, fields[k]) if k in fields else v for k, v in value.items()}


def _decimal(value: Any, scale: Any) -> Decimal:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return Decimal(str(value))  # JsonConverter decimal.format=NUMERIC
    unscaled = int.from_bytes(base64.b64decode(value, validate=True), "big", signed=True)
    return Decimal(f"{unscaled}E{-int(scale)}")  # exact: no context rounding


def _timestamp(per_second: int) -> Callable[[Any, Schema], datetime | str]:
    def decode(value: Any, _schema: Schema) -> datetime | str:
        count = _int(value)
        if count >= _PG_INFINITY:
            return "infinity"  # what psycopg keeps for timestamp 'infinity'
        if count <= _PG_NEG_INFINITY:
            return "-infinity"
        return _EPOCH + timedelta(microseconds=count * 1_000_000 // per_second)

    return decode


def _zoned_timestamp(value: Any, _schema: Schema) -> datetime | str:
    text = _text(value)
    if text in ("infinity", "-infinity"):
        return text
    return datetime.fromisoformat(text).astimezone(UTC)


def _time(per_second: int) -> Callable[[Any, Schema], time | str]:
    def decode(value: Any, _schema: Schema) -> time | str:
        micros = _int(value) * 1_000_000 // per_second
        if micros == 86_400_000_000:
            return "24:00:00"  # valid in Postgres, not in Python (psycopg keeps the text)
        return (datetime.min + timedelta(microseconds=micros)).time()

    return decode


_BY_TYPE: dict[Any, Callable[[Any, Schema], Any]] = {
    "int8": lambda v, _: _int(v),
    "int16": lambda v, _: _int(v),
    "int32": lambda v, _: _int(v),
    "int64": lambda v, _: _int(v),
    "float32": _float,
    "float64": _float,
    "boolean": lambda v, _: _bool(v),
    "string": _string,
    "bytes": lambda v, _: base64.b64decode(_text(v), validate=True),
    "array": _array,
    "map": _map,
    "struct": _struct,
}
_SEMANTIC: dict[str, Callable[[Any, Schema], Any]] = {
    "org.apache.kafka.connect.data.Decimal": lambda v, s: _decimal(v, s["parameters"]["scale"]),
    "io.debezium.data.VariableScaleDecimal": lambda v, _: _decimal(v["value"], v["scale"]),
    "io.debezium.time.Timestamp": _timestamp(1000),
    "io.debezium.time.MicroTimestamp": _timestamp(1_000_000),
    "io.debezium.time.NanoTimestamp": _timestamp(1_000_000_000),
    "org.apache.kafka.connect.data.Timestamp": _timestamp(1000),
    "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
    "io.debezium.time.Date": lambda v, _: _EPOCH_DATE + timedelta(days=_int(v)),
    "org.apache.kafka.connect.data.Date": lambda v, _: _EPOCH_DATE + timedelta(days=_int(v)),
    "io.debezium.time.Time": _time(1000),
    "io.debezium.time.MicroTime": _time(1_000_000),
    "io.debezium.time.NanoTime": _time(1_000_000_000),
    "org.apache.kafka.connect.data.Time": _time(1000),
    "io.debezium.time.ZonedTime": lambda v, _: time.fromisoformat(_text(v)),
    "io.debezium.time.MicroDuration": lambda v, _: timedelta(microseconds=_int(v)),
    "io.debezium.data.Json": lambda v, _: json.loads(_text(v)),
    "io.debezium.data.Uuid": lambda v, _: UUID(_text(v)),
}


# -- plain JSON (`format: json`) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonMapping:
    """Where a plain JSON record keeps its parts; values are dotted paths into the record.

    `table` is a path, or a constant written `=schema.table`; `schema.` defaults to `public`.
    `op` (optional) holds `insert|update|delete|snapshot|truncate` or Debezium's `c|u|d|r|t`;
    without it the op follows from which rows are present. Without `before` and `after` the
    whole record is the row. `key` (optional) is a path to an object of key columns.
    """

    table: str
    op: str | None = None
    before: str | None = None
    after: str | None = None
    key: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> JsonMapping:
        unknown = sorted(set(mapping) - {"table", "op", "before", "after", "key"})
        if unknown:
            known = "table, op, before, after, key"
            raise ConfigError(f"json mapping: unknown keys {unknown}; known: {known}")
        if not mapping.get("table"):
            raise ConfigError("json mapping: 'table' is required (a field path or '=schema.table')")
        return cls(**{k: str(v) for k, v in mapping.items()})


def decode_plain_json(
    value: bytes | None,
    mapping: JsonMapping | Mapping[str, str],
    *,
    topic: str,
    partition: int,
    offset: int,
) -> ChangeEvent | None:
    """One plain JSON record -> a `ChangeEvent` placed by `mapping`; None for a tombstone."""
    if value is None:
        return None
    where = f"{topic}[{partition}]@{offset}"
    m = mapping if isinstance(mapping, JsonMapping) else JsonMapping.from_mapping(mapping)
    try:
        doc = _plain(_parse(value, "value"))
        if not isinstance(doc, dict):
            raise PoisonMessage("the record is not a JSON object")
        qualified = m.table[1:] if m.table.startswith("=") else _path(doc, m.table)
        if not isinstance(qualified, str) or not qualified:
            raise PoisonMessage(f"table field {m.table!r} is missing or not a string")
        schema, _, table = qualified.rpartition(".")
        whole = m.before is None and m.after is None
        after = doc if whole else _object(doc, m.after)
        before = None if whole else _object(doc, m.before)
        op = _plain_op(doc, m.op, before, after)
        if op == "delete" and before is None:
            before, after = after, None
        key = _object(doc, m.key) or {}
    except PoisonMessage as exc:
        raise PoisonMessage(exc.reason, where) from exc
    return ChangeEvent(
        op=op,
        schema=schema or "public",
        table=table,
        position=SourcePosition(kind="kafka", topic=topic, partition=partition, offset=offset),
        after=after,
        before=before,
        key=key,
    )


def _path(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _object(doc: Any, path: str | None) -> dict[str, Any] | None:
    found = None if path is None else _path(doc, path)
    if found is not None and not isinstance(found, dict):
        raise PoisonMessage(f"field {path!r} is {type(found).__name__}, not an object")
    return found


def _plain_op(doc: Any, path: str | None, before: Any, after: Any) -> str:
    if path is None:
        return "update" if before and after else "insert" if after is not None else "delete"
    raw = _path(doc, path)
    op = _OPS.get(raw, raw) if isinstance(raw, str) else None
    if op not in _OPS.values():
        raise PoisonMessage(f"op field {path!r} holds {raw!r}, not a known op")
    return str(op)
