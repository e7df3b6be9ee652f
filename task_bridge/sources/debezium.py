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

Without a schema (`schemas.enable=false`) nothing in the record says what a column is: columns
declared in `kafka.column_types` decode by their Postgres type (`sources.kafka_connect`),
others pass as JSON gives them: decimals as base64 strings (or
numbers / `{"scale", "value"}` structs), timestamps and dates as integers, timestamptz and
uuid as strings, json/jsonb as JSON *text*, bytea as base64 strings.

Both ways, Debezium's unchanged-TOAST placeholder `__debezium_unavailable_value` in any of its
per-type forms (string, base64 of it for bytes, `[marker]`, its ASCII codes, its name-UUID) becomes
`UNCHANGED`. Input that cannot be decoded raises `PoisonMessage`; tombstones, heartbeats,
transaction metadata and rowless events (`op: m`, schema changes) give `None`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from task_bridge.errors import ConfigError, SourceError
from task_bridge.events import UNCHANGED, ChangeEvent, Op, SourcePosition
from task_bridge.sources.kafka_connect import ColumnTypes, Decoder, Schema, decode_value

MARKER = "__debezium_unavailable_value"
_MARKER_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="  # base64 of MARKER's UTF-8
_MARKER_UUID = "b68a35a7-17ad-35b3-af2a-ae46edb4545a"  # Java UUID.nameUUIDFromBytes(MARKER)
_MARKER_LISTS: tuple[list[Any], ...] = (
    [MARKER],
    [_MARKER_B64],
    [_MARKER_UUID],
    list(MARKER.encode()),  # int[]/bigint[]/date[]: the placeholder's ASCII codes
)
_OPS: dict[str, Op] = {
    "c": "insert",
    "u": "update",
    "d": "delete",
    "r": "snapshot",
    "t": "truncate",
}
_BY_NAME: dict[str, Op] = {op: op for op in _OPS.values()}
_ROWLESS_KEYS = ("ddl", "tableChanges", "databaseName")  # schema-change / history events


class PoisonMessage(SourceError):
    """A Kafka record that cannot be decoded; `reason` says why (retrying cannot help)."""

    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason


# -- entry points ---------------------------------------------------------------------------------


def decode_debezium(
    key: bytes | None,
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    column_types: ColumnTypes | None = None,
) -> ChangeEvent | None:
    """One Kafka record of a Debezium PostgreSQL topic -> a `ChangeEvent`, or None if rowless.

    `column_types` types the columns of schemaless records (a schema, when present, wins)."""
    if value is None:
        return None  # tombstone after a delete
    try:
        key_doc = _parse(key, "key") if key else None
        value_doc = _parse(value, "value")
    except PoisonMessage as exc:
        raise PoisonMessage(exc.reason, f"{topic}[{partition}]@{offset}") from exc
    return decode_debezium_json(
        key_doc,
        value_doc,
        topic=topic,
        partition=partition,
        offset=offset,
        column_types=column_types,
    )


def decode_debezium_json(
    key: Any,
    value: Any,
    *,
    topic: str,
    partition: int,
    offset: int,
    column_types: ColumnTypes | None = None,
) -> ChangeEvent | None:
    """`decode_debezium` for a key and value already parsed from JSON (`bridge dry-run`)."""
    position = SourcePosition(kind="kafka", topic=topic, partition=partition, offset=offset)
    try:
        return _decode_record(key, value, position, topic, column_types or {})
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
    key_doc: Any, value_doc: Any, position: SourcePosition, topic: str, column_types: ColumnTypes
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
    namespace = str(source.get("schema") or "pg_catalog")
    declared = column_types.get(f"{namespace}.{table}", {})
    envelope = _fields(schema) if schema is not None else None
    before = _row(payload.get("before"), _row_fields(envelope, "before"), "before", declared)
    after = _row(payload.get("after"), _row_fields(envelope, "after"), "after", declared)
    if op in ("insert", "update", "snapshot") and after is None:
        raise PoisonMessage(f"op {code!r} without an 'after' row")
    return ChangeEvent(
        op=op,
        schema=namespace,
        table=table,
        position=position,
        after=after,
        before=before,
        key={} if op == "truncate" else _key(key_doc, declared),
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


def _key(doc: Any, declared: Mapping[str, Decoder]) -> dict[str, Any]:
    """The record key's fields (primary key / replica identity); {} for a keyless table."""
    schema, payload = _unwrap(doc, "key")
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise PoisonMessage(f"key payload is {type(payload).__name__}, not an object")
    return _row(payload, _fields(schema) if schema is not None else None, "key", declared) or {}


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


def _row(
    value: Any,
    fields: dict[str, Schema] | None,
    what: str,
    declared: Mapping[str, Decoder] | None = None,
) -> dict[str, Any] | None:
    """A row object (before/after/key) decoded by its struct's fields, or without a schema by the
    declared column types (others as JSON gives them); None stays None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PoisonMessage(f"{what} is {type(value).__name__}, not an object")
    if fields is None:
        return {
            name: _declared_column(v, declared[name], f"{what}.{name}")
            if declared and name in declared
            else _plain_column(v)
            for name, v in value.items()
        }
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
        raise PoisonMessage(f"{where}: cannot decode {label} value {_shown(value)}: {exc}") from exc


def _declared_column(value: Any, decoder: Decoder, where: str) -> Any:
    if value is None:
        return None
    if _unavailable(value):
        return UNCHANGED
    try:
        return decoder(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise PoisonMessage(
            f"{where}: cannot decode {_shown(value)} as its declared type: {exc}"
        ) from exc


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    column_types: ColumnTypes | None = None,
) -> ChangeEvent | None:
    """One plain JSON record -> a `ChangeEvent` placed by `mapping`; None for a tombstone.

    Values are as JSON gives them, except the columns `column_types` declares."""
    if value is None:
        return None
    where = f"{topic}[{partition}]@{offset}"
    m = mapping if isinstance(mapping, JsonMapping) else JsonMapping.from_mapping(mapping)
    try:
        doc = _parse(value, "value")
        if not isinstance(doc, dict):
            raise PoisonMessage("the record is not a JSON object")
        qualified = m.table[1:] if m.table.startswith("=") else _path(doc, m.table)
        if not isinstance(qualified, str) or not qualified:
            raise PoisonMessage(f"table field {m.table!r} is missing or not a string")
        schema, _, table = qualified.rpartition(".")
        schema = schema or "public"
        declared = (column_types or {}).get(f"{schema}.{table}", {})
        whole = m.before is None and m.after is None
        after = _row(doc if whole else _object(doc, m.after), None, "after", declared)
        before = None if whole else _row(_object(doc, m.before), None, "before", declared)
        op = _plain_op(doc, m.op, before, after)
        if op == "delete" and before is None:
            before, after = after, None
        key = _row(_object(doc, m.key), None, "key", declared) or {}
    except PoisonMessage as exc:
        raise PoisonMessage(exc.reason, where) from exc
    return ChangeEvent(
        op=op,
        schema=schema,
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


def _plain_op(doc: Any, path: str | None, before: Any, after: Any) -> Op:
    if path is None:
        return "update" if before and after else "insert" if after is not None else "delete"
    raw = _path(doc, path)
    op = (_OPS.get(raw) or _BY_NAME.get(raw)) if isinstance(raw, str) else None
    if op is None:
        raise PoisonMessage(f"op field {path!r} holds {raw!r}, not a known op")
    return op
