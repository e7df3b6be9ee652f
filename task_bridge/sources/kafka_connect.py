"""Column values of Kafka Connect JSON -> the Python values the Postgres source gives.

By a Connect schema (`decode_value`: `type` and semantic `name`, as Debezium writes them with
`schemas.enable=true`), or by a Postgres column type the user declares for schemaless topics
(`declared_type`: `kafka.column_types` in bridge.yaml).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from task_bridge.jsonenc import loads_payload

Schema = Mapping[str, Any]

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_PG_INFINITY = 9223372036825200000  # PGStatement.DATE_POSITIVE_INFINITY, any time unit
_PG_NEG_INFINITY = -9223372036832400000
_NUMERIC_TYPES = ("NUMERIC", "DECIMAL")
_SOURCE_TYPE = "__debezium.source.column.type"


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
    "io.debezium.data.Json": lambda v, _: loads_payload(_text(v)),
    "io.debezium.data.Uuid": lambda v, _: UUID(_text(v)),
}


# -- by a declared Postgres type (schemaless topics) ---------------------------------------------

Decoder = Callable[[Any], Any]


def _loose_decimal(value: Any) -> Decimal:
    # decimal.handling.mode=string ("12.50") or double (a JSON number, parsed as Decimal)
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise TypeError("not a number or a numeric string")
    return Decimal(value) if isinstance(value, str) else Decimal(str(value))


def _counted_or_iso(counted: Callable[[Any, Schema], Any], parse: Callable[[str], Any]) -> Decoder:
    """Debezium's integer forms (epoch days, micro/milliseconds), or ISO text (plain JSON rows)."""
    return lambda v: parse(v) if isinstance(v, str) else counted(v, {})


def _plain_number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


_PASS_THROUGH = frozenset(
    {"text", "varchar", "char", "bpchar", "name", "citext", "inet", "cidr", "macaddr", "xml"}
    | {"smallint", "integer", "bigint", "int", "int2", "int4", "int8", "serial", "bigserial"}
    | {"boolean", "bool", "real", "float4", "float8", "double precision"}
)


def declared_type(pg_type: str) -> Decoder:
    """A decoder for a schemaless JSON value of a column of Postgres type `pg_type`.

    `numeric[(p,s)]` from a numeric string or number (Debezium `decimal.handling.mode=string` or
    `double`; `precise` writes base64 bytes that need the scale a schema carries), `timestamptz`,
    `timestamp[(p)]` (micro-, or for p <= 3 milliseconds, as `time.precision.mode=adaptive`),
    `date`, `time[(p)]`, `interval` (microseconds), `json`/`jsonb` (JSON text), `uuid`, `bytea`
    (base64), `T[]`; text, integer, boolean and float types pass as JSON gives them.
    Raises ValueError for a type it does not know."""
    text = " ".join(pg_type.lower().split())
    if text.endswith("[]"):
        item = declared_type(text[:-2])
        return lambda v: [None if x is None else item(x) for x in _array_value(v)]
    modifier = _MODIFIER.search(text)  # (p) or (p,s), also mid-name: timestamp(3) with time zone
    if modifier is not None:
        text = " ".join((text[: modifier.start()] + " " + text[modifier.end() :]).split())
    elif "(" in text:
        raise ValueError(f"cannot read the type modifier in {pg_type!r}")
    name = _ALIASES.get(text, text)
    precision = int(modifier.group(1)) if modifier is not None else 6
    per_second = 1000 if precision <= 3 else 1_000_000
    if name == "timestamp":
        return _counted_or_iso(_timestamp(per_second), datetime.fromisoformat)
    if name == "time":
        return _counted_or_iso(_time(per_second), time.fromisoformat)
    decoder = _DECLARED.get(name)
    if decoder is not None:
        return decoder
    if name in _PASS_THROUGH or name.startswith("character"):
        return _plain_number
    known = sorted({*_DECLARED, "timestamp", "time", *_PASS_THROUGH})
    raise ValueError(f"unknown column type {pg_type!r}; known: {', '.join(known)}")


def _array_value(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not an array")
    return value


_MODIFIER = re.compile(r"\(\s*(\d+)\s*(?:,\s*-?\d+\s*)?\)")
_ALIASES = {
    "decimal": "numeric",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}
_DECLARED: dict[str, Decoder] = {
    "numeric": _loose_decimal,
    "timestamptz": lambda v: _zoned_timestamp(v, {}),
    "date": _counted_or_iso(_SEMANTIC["io.debezium.time.Date"], date.fromisoformat),
    "timetz": lambda v: time.fromisoformat(_text(v)),
    "interval": lambda v: timedelta(microseconds=_int(v)),
    "json": lambda v: loads_payload(_text(v)),
    "jsonb": lambda v: loads_payload(_text(v)),
    "uuid": lambda v: UUID(_text(v)),
    "bytea": lambda v: base64.b64decode(_text(v), validate=True),
}

ColumnTypes = Mapping[str, Mapping[str, Decoder]]
"""`schema.table` -> column -> decoder."""


def column_types(declared: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Decoder]]:
    """`kafka.column_types` from bridge.yaml compiled; a bare table name means `public.<table>`.
    Raises ValueError naming the table and column of a type it does not know."""
    compiled: dict[str, dict[str, Decoder]] = {}
    for table, columns in declared.items():
        qualified = table if "." in table else f"public.{table}"
        decoders = compiled.setdefault(qualified, {})
        for column, pg_type in columns.items():
            try:
                decoders[column] = declared_type(pg_type)
            except ValueError as exc:
                raise ValueError(f"{table}.{column}: {exc}") from None
    return compiled
