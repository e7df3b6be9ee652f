"""Debezium JsonConverter records -> ChangeEvent, on hand-written messages shaped like the
PostgreSQL connector's output (facts: shared/reference/debezium_format.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from task_bridge.errors import ConfigError, SourceError
from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.sources.debezium import (
    MARKER,
    JsonMapping,
    PoisonMessage,
    decode_debezium,
    decode_debezium_json,
    decode_plain_json,
)
from task_bridge.sources.postgres.pgoutput import LoaderCache

TOPIC = "dbserver1.public.orders"
COMMIT = datetime(2026, 1, 1, 10, 4, 5, 123456, tzinfo=UTC)
COMMIT_US = (COMMIT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1)
REF = UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
MARKER_B64 = base64.b64encode(MARKER.encode()).decode()


# -- message builders -----------------------------------------------------------------------------


def col(name: str, ctype: str, semantic: str | None = None, **extra: Any) -> dict[str, Any]:
    """One Connect field schema as JsonConverter writes it."""
    field: dict[str, Any] = {"type": ctype, "optional": True, "field": name}
    if semantic:
        field.update(name=semantic, version=1)
    field.update(extra)
    return field


ID = col("id", "int32", optional=False)
SOURCE_SCHEMA = {
    "type": "struct",
    "name": "io.debezium.connector.postgresql.Source",
    "optional": False,
    "field": "source",
    "fields": [
        col("version", "string"),
        col("connector", "string"),
        col("name", "string"),
        col("ts_ms", "int64"),
        col("snapshot", "string", "io.debezium.data.Enum", default="false"),
        col("db", "string"),
        col("sequence", "string"),
        col("ts_us", "int64"),
        col("schema", "string"),
        col("table", "string"),
        col("txId", "int64"),
        col("lsn", "int64"),
        col("xmin", "int64"),
    ],
}


def envelope_schema(columns: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"type": "struct", "optional": True, "name": f"{TOPIC}.Value", "fields": columns}
    return {
        "type": "struct",
        "optional": False,
        "name": f"{TOPIC}.Envelope",
        "version": 2,
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            SOURCE_SCHEMA,
            col("op", "string", optional=False),
            col("ts_ms", "int64"),
            col("ts_us", "int64"),
            {"type": "struct", "optional": True, "field": "transaction", "fields": []},
        ],
    }


def source(table: str = "orders", txid: int | None = 777, **extra: Any) -> dict[str, Any]:
    return {
        "version": "2.7.0.Final",
        "connector": "postgresql",
        "name": "dbserver1",
        "ts_ms": COMMIT_US // 1000,
        "snapshot": "false",
        "db": "shop",
        "sequence": '["24023928","24023928"]',
        "ts_us": COMMIT_US,
        "schema": "public",
        "table": table,
        "txId": txid,
        "lsn": 24023928,
        "xmin": None,
        **extra,
    }


def value_doc(
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    columns: list[dict[str, Any]] | None = None,
    **src: Any,
) -> Any:
    """A value envelope; with `columns` wrapped as schemas.enable=true."""
    payload = {
        "before": before,
        "after": after,
        "source": source(**src),
        "op": op,
        "ts_ms": COMMIT_US // 1000 + 5,
        "ts_us": COMMIT_US + 5000,
        "transaction": None,
    }
    if columns is None:
        return payload
    return {"schema": envelope_schema(columns), "payload": payload}


def key_doc(key: dict[str, Any], columns: list[dict[str, Any]] | None = None) -> Any:
    if columns is None:
        return key
    schema = {"type": "struct", "optional": False, "name": f"{TOPIC}.Key", "fields": columns}
    return {"schema": schema, "payload": key}


def enc(doc: Any) -> bytes:
    """JSON bytes; a Decimal is written as the exact number text, as Jackson writes BigDecimal."""
    text = json.dumps(doc, default=lambda d: f"<num>{d}</num>")
    return re.sub(r'"<num>(.*?)</num>"', r"\1", text).encode()


def decode(key: Any, value: Any, offset: int = 42) -> ChangeEvent | None:
    raw_key = None if key is None else enc(key)
    raw_value = None if value is None else enc(value)
    return decode_debezium(raw_key, raw_value, topic=TOPIC, partition=3, offset=offset)


def decimal_b64(unscaled: int) -> str:
    size = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def one_column(schema: dict[str, Any], wire: Any) -> Any:
    """Decode a single-column insert with a schema; return the column's value."""
    event = decode(None, value_doc("c", after={"v": wire}, columns=[{**schema, "field": "v"}]))
    assert event is not None and event.after is not None
    return event.after["v"]


# -- envelopes and ops ----------------------------------------------------------------------------


def test_insert_with_schema_gives_typed_row_key_position_time_and_txid() -> None:
    """A create with schemas.enable=true becomes an insert with every source field filled."""
    columns = [ID, col("note", "string")]
    event = decode(
        key_doc({"id": 7}, [ID]),
        value_doc("c", after={"id": 7, "note": "hi"}, columns=columns),
    )
    assert event == ChangeEvent(
        op="insert",
        schema="public",
        table="orders",
        position=SourcePosition(kind="kafka", topic=TOPIC, partition=3, offset=42),
        after={"id": 7, "note": "hi"},
        before=None,
        key={"id": 7},
        commit_time=COMMIT,
        txid=777,
    )
    assert event.position.key() == f"kafka:{TOPIC}:3:42"


def test_update_without_schema_passes_json_values() -> None:
    """A schemaless update keeps JSON's values and a null `before` (REPLICA IDENTITY DEFAULT)."""
    event = decode({"id": 7}, value_doc("u", after={"id": 7, "ratio": 0.5, "tags": ["a"]}))
    assert event is not None
    assert (event.op, event.before, event.key) == ("update", None, {"id": 7})
    assert event.after == {"id": 7, "ratio": 0.5, "tags": ["a"]}
    assert type(event.after["ratio"]) is float


def test_delete_uses_before_then_tombstone_is_skipped() -> None:
    """A delete carries the old key columns in `before`; the tombstone after it gives None."""
    event = decode(key_doc({"id": 7}, [ID]), value_doc("d", before={"id": 7}, columns=[ID]))
    assert event is not None
    assert (event.op, event.before, event.after, event.row) == (
        "delete",
        {"id": 7},
        None,
        {"id": 7},
    )
    assert decode(key_doc({"id": 7}, [ID]), None) is None


def test_snapshot_read_is_op_snapshot() -> None:
    """An `r` record from the initial snapshot becomes op=snapshot."""
    value = value_doc("r", after={"id": 1}, columns=[ID], snapshot="first")
    event = decode({"id": 1}, value)
    assert event is not None and event.op == "snapshot" and event.after == {"id": 1}


def test_truncate_is_one_event_without_rows() -> None:
    """A `t` record becomes one truncate event with no rows and an empty key."""
    event = decode(None, value_doc("t", columns=[ID]))
    assert event is not None
    assert (event.op, event.table, event.before, event.after, event.key) == (
        "truncate",
        "orders",
        None,
        None,
        {},
    )


def test_commit_time_falls_back_to_ts_ms() -> None:
    """Without `source.ts_us` the commit time comes from `source.ts_ms`, tz-aware UTC."""
    doc = value_doc("c", after={"id": 1})
    del doc["source"]["ts_us"]
    event = decode(None, doc)
    assert event is not None and event.commit_time == COMMIT.replace(microsecond=123000)
    assert event.commit_time.tzinfo is UTC


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param({"serverName": "dbserver1"}, {"ts_ms": 1767261845123}, id="heartbeat"),
        pytest.param(
            {
                "schema": {
                    "type": "struct",
                    "name": "io.debezium.connector.common.ServerNameKey",
                    "fields": [col("serverName", "string")],
                },
                "payload": {"serverName": "dbserver1"},
            },
            {
                "schema": {
                    "type": "struct",
                    "name": "io.debezium.connector.common.Heartbeat",
                    "fields": [col("ts_ms", "int64")],
                },
                "payload": {"ts_ms": 1767261845123},
            },
            id="heartbeat-schema",
        ),
        pytest.param(
            {"id": "571:53195829"},
            {
                "status": "BEGIN",
                "id": "571:53195829",
                "ts_ms": 1767261845123,
                "event_count": None,
                "data_collections": None,
            },
            id="tx-begin",
        ),
        pytest.param(
            {"id": "571:53195829"},
            {
                "status": "END",
                "id": "571:53195829",
                "ts_ms": 1767261845123,
                "event_count": 2,
                "data_collections": [{"data_collection": "public.orders", "event_count": 2}],
            },
            id="tx-end",
        ),
        pytest.param(
            {"prefix": "audit"},
            {
                "op": "m",
                "ts_ms": 1,
                "source": source(table=""),
                "message": {"prefix": "audit", "content": "aGk="},
            },
            id="logical-message",
        ),
        pytest.param(None, {"ddl": "CREATE TABLE t (id int)", "tableChanges": []}, id="ddl"),
        pytest.param(None, {"schema": None, "payload": None}, id="null-payload"),
    ],
)
def test_rowless_records_give_none(key: Any, value: Any) -> None:
    """Heartbeats, transaction metadata, logical messages and schema changes carry no row."""
    assert decode(key, value) is None


# -- semantic types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "wire", "expected"),
    [
        (
            col(
                "v",
                "bytes",
                "org.apache.kafka.connect.data.Decimal",
                parameters={"scale": "2", "connect.decimal.precision": "10"},
            ),
            decimal_b64(1250),
            Decimal("12.50"),
        ),
        (
            col("v", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "3"}),
            decimal_b64(-123456),
            Decimal("-123.456"),
        ),
        (
            col("v", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "10"}),
            decimal_b64(12345678901234567890123456789012345),
            Decimal("1234567890123456789012345.6789012345"),
        ),
        (
            col("v", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
            Decimal("12.50"),
            Decimal("12.50"),
        ),  # JsonConverter decimal.format=NUMERIC
        (
            col(
                "v",
                "struct",
                "io.debezium.data.VariableScaleDecimal",
                fields=[col("scale", "int32"), col("value", "bytes")],
            ),
            {"scale": 5, "value": decimal_b64(314159)},
            Decimal("3.14159"),
        ),
        (
            col("v", "int64", "io.debezium.time.MicroTimestamp"),
            1529507596945104,
            datetime(2018, 6, 20, 15, 13, 16, 945104),
        ),
        (
            col("v", "int64", "io.debezium.time.Timestamp"),
            1529507596945,
            datetime(2018, 6, 20, 15, 13, 16, 945000),
        ),
        (
            col("v", "int64", "io.debezium.time.NanoTimestamp"),
            1529507596945104123,
            datetime(2018, 6, 20, 15, 13, 16, 945104),
        ),
        (col("v", "int64", "io.debezium.time.MicroTimestamp"), 9223372036825200000, "infinity"),
        (col("v", "int64", "io.debezium.time.MicroTimestamp"), -9223372036832400000, "-infinity"),
        (
            col("v", "string", "io.debezium.time.ZonedTimestamp"),
            "2018-06-20T13:13:16.945104Z",
            datetime(2018, 6, 20, 13, 13, 16, 945104, tzinfo=UTC),
        ),
        (
            col("v", "string", "io.debezium.time.ZonedTimestamp"),
            "2018-06-20T13:13:16Z",
            datetime(2018, 6, 20, 13, 13, 16, tzinfo=UTC),
        ),
        (col("v", "string", "io.debezium.time.ZonedTimestamp"), "infinity", "infinity"),
        (col("v", "int32", "io.debezium.time.Date"), 17702, date(2018, 6, 20)),
        (col("v", "int32", "io.debezium.time.Date"), -1, date(1969, 12, 31)),
        (col("v", "int64", "io.debezium.time.MicroTime"), 45296789000, time(12, 34, 56, 789000)),
        (col("v", "int32", "io.debezium.time.Time"), 45296789, time(12, 34, 56, 789000)),
        (col("v", "int64", "io.debezium.time.NanoTime"), 45296789000123, time(12, 34, 56, 789000)),
        (col("v", "int64", "io.debezium.time.MicroTime"), 86400000000, "24:00:00"),
        (col("v", "string", "io.debezium.time.ZonedTime"), "10:00:00Z", time(10, tzinfo=UTC)),
        (
            col("v", "int64", "io.debezium.time.MicroDuration"),
            93600000000,
            timedelta(days=1, hours=2),
        ),
        (
            col("v", "string", "io.debezium.data.Json"),
            '{"a": [1, 2.5], "b": null}',
            {"a": [1, 2.5], "b": None},
        ),
        (col("v", "string", "io.debezium.data.Uuid"), str(REF), REF),
        (col("v", "bytes"), base64.b64encode(b"\x00\x01\xff").decode(), b"\x00\x01\xff"),
        (col("v", "array", items=col("", "int32")), [1, None, 3], [1, None, 3]),
        (
            col("v", "array", items=col("", "string", "io.debezium.data.Json")),
            ['{"a": 1}', "[2]"],
            [{"a": 1}, [2]],
        ),
        (col("v", "array", items=col("", "string", "io.debezium.data.Uuid")), [str(REF)], [REF]),
        (
            col("v", "array", items=col("", "int32", "io.debezium.time.Date")),
            [0],
            [date(1970, 1, 1)],
        ),
        (col("v", "float64"), Decimal("1.5"), 1.5),
        (col("v", "float32"), 2, 2.0),
        (col("v", "boolean"), True, True),
        (
            col("v", "string", "io.debezium.data.Enum", parameters={"allowed": "new,paid"}),
            "paid",
            "paid",
        ),
        (col("v", "map", keys=col("", "string"), values=col("", "string")), {"a": "1"}, {"a": "1"}),
        (col("v", "string"), None, None),
    ],
    ids=lambda p: p.get("name", p["type"]) if isinstance(p, dict) and "type" in p else None,
)
def test_semantic_types_decode_like_pgoutput(
    schema: dict[str, Any], wire: Any, expected: Any
) -> None:
    """Each Connect/Debezium semantic type decodes to the Python value pgoutput gives."""
    got = one_column(schema, wire)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, datetime):
        assert got.tzinfo == expected.tzinfo


def test_decimal_handling_mode_string_and_double() -> None:
    """decimal.handling.mode=string/double: str/float, Decimal when the source type is NUMERIC."""
    numeric = {"__debezium.source.column.type": "NUMERIC", "__debezium.source.column.scale": "2"}
    assert one_column(col("v", "string"), "12.50") == "12.50"
    as_str = one_column(col("v", "string", parameters=numeric), "12.50")
    assert as_str == Decimal("12.50") and type(as_str) is Decimal
    assert one_column(col("v", "string", parameters=numeric), "NAN").is_nan()
    as_double = one_column(col("v", "float64"), 12.5)
    assert as_double == 12.5 and type(as_double) is float
    exact = one_column(col("v", "float64", parameters=numeric), Decimal("0.10"))
    assert exact == Decimal("0.10") and type(exact) is Decimal


# -- the unavailable (unchanged TOAST) marker -----------------------------------------------------


def java_name_uuid(data: bytes) -> UUID:
    """Java's UUID.nameUUIDFromBytes: MD5, version 3, IETF variant."""
    return UUID(bytes=hashlib.md5(data).digest(), version=3)


@pytest.mark.parametrize(
    ("schema", "wire"),
    [
        (col("v", "string"), MARKER),
        (col("v", "string", "io.debezium.data.Json"), MARKER),
        (col("v", "bytes"), MARKER_B64),
        (
            col("v", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
            MARKER_B64,
        ),
        (col("v", "array", items=col("", "string")), [MARKER]),
        (col("v", "array", items=col("", "string", "io.debezium.data.Json")), [MARKER]),
        (col("v", "array", items=col("", "int32")), list(MARKER.encode())),
        (col("v", "array", items=col("", "int64")), list(MARKER.encode())),
        (
            col("v", "array", items=col("", "string", "io.debezium.data.Uuid")),
            [str(java_name_uuid(MARKER.encode()))],
        ),
        (col("v", "map", keys=col("", "string"), values=col("", "string")), {MARKER: MARKER}),
    ],
)
def test_unavailable_marker_in_each_form_is_unchanged(schema: dict[str, Any], wire: Any) -> None:
    """Every per-type form of `__debezium_unavailable_value` becomes the UNCHANGED sentinel."""
    assert one_column(schema, wire) is UNCHANGED


def test_unavailable_marker_without_schema_is_unchanged() -> None:
    """Schemaless records map the marker (and its base64/array forms) to UNCHANGED too."""
    after = {"id": 1, "a": MARKER, "b": MARKER_B64, "c": [MARKER], "d": list(MARKER.encode())}
    event = decode({"id": 1}, value_doc("u", after=after))
    assert event is not None and event.after is not None
    assert all(event.after[name] is UNCHANGED for name in "abcd")
    assert event.changed == []


def test_base64_of_marker_in_a_string_column_is_kept() -> None:
    """With a schema saying string, the marker's base64 text is a real value, not the marker."""
    assert one_column(col("v", "string"), MARKER_B64) == MARKER_B64


# -- parity with the Postgres source --------------------------------------------------------------


PARITY_COLUMNS: list[tuple[str, int, bytes, dict[str, Any], Any]] = [
    # name, type OID, pgoutput text, Connect schema, JsonConverter wire value
    ("id", 23, b"7", col("id", "int32", optional=False), 7),
    (
        "amount",
        1700,
        b"12.50",
        col("amount", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
        decimal_b64(1250),
    ),
    (
        "ratio",
        1700,
        b"3.14159",
        col(
            "ratio",
            "struct",
            "io.debezium.data.VariableScaleDecimal",
            fields=[col("scale", "int32"), col("value", "bytes")],
        ),
        {"scale": 5, "value": decimal_b64(314159)},
    ),
    (
        "created_at",
        1184,
        b"2018-06-20 13:13:16.945104+00",
        col("created_at", "string", "io.debezium.time.ZonedTimestamp"),
        "2018-06-20T13:13:16.945104Z",
    ),
    (
        "placed",
        1114,
        b"2018-06-20 15:13:16.945104",
        col("placed", "int64", "io.debezium.time.MicroTimestamp"),
        1529507596945104,
    ),
    ("due", 1082, b"2018-06-20", col("due", "int32", "io.debezium.time.Date"), 17702),
    ("at", 1083, b"12:34:56.789", col("at", "int64", "io.debezium.time.MicroTime"), 45296789000),
    (
        "doc",
        3802,
        b'{"a": [1, 2.5], "b": {"c": null}}',
        col("doc", "string", "io.debezium.data.Json"),
        '{"a":[1,2.5],"b":{"c":null}}',
    ),
    ("ref", 2950, str(REF).encode(), col("ref", "string", "io.debezium.data.Uuid"), str(REF)),
    ("tags", 1009, b"{a,b}", col("tags", "array", items=col("", "string")), ["a", "b"]),
    ("nums", 1007, b"{1,NULL,3}", col("nums", "array", items=col("", "int32")), [1, None, 3]),
    ("data", 17, b"\\x0001ff", col("data", "bytes"), base64.b64encode(b"\x00\x01\xff").decode()),
    ("paid", 16, b"t", col("paid", "boolean"), True),
    ("weight", 701, b"0.1", col("weight", "float64"), 0.1),
    ("big", 20, b"9007199254740993", col("big", "int64"), 9007199254740993),
    ("note", 25, b"hello", col("note", "string"), "hello"),
]


def test_debezium_event_equals_postgres_event_apart_from_position() -> None:
    """The same update read by pgoutput and by Debezium (schemas on) gives an equal event."""
    loaders = LoaderCache()
    pg_after: dict[str, Any] = {
        name: loaders.get(oid)(text) for name, oid, text, _, _ in PARITY_COLUMNS
    }
    pg_after["long_text"] = UNCHANGED  # unchanged TOASTed column, not sent by pgoutput
    postgres = ChangeEvent(
        op="update",
        schema="public",
        table="orders",
        position=SourcePosition(kind="postgres", lsn=0x16B3748, index=2),
        after=pg_after,
        before=None,
        key={"id": 7},
        commit_time=COMMIT,
        txid=777,
    )
    # the loaders' values are the types SPEC section 3 promises, spelled out by hand
    assert pg_after["amount"] == Decimal("12.50") and pg_after["ratio"] == Decimal("3.14159")
    assert pg_after["created_at"] == datetime(2018, 6, 20, 13, 13, 16, 945104, tzinfo=UTC)
    assert pg_after["placed"] == datetime(2018, 6, 20, 15, 13, 16, 945104)
    assert pg_after["doc"] == {"a": [1, 2.5], "b": {"c": None}} and pg_after["ref"] == REF

    columns = [schema for _, _, _, schema, _ in PARITY_COLUMNS] + [col("long_text", "string")]
    wire_after = {name: wire for name, _, _, _, wire in PARITY_COLUMNS} | {"long_text": MARKER}
    event = decode(key_doc({"id": 7}, [ID]), value_doc("u", after=wire_after, columns=columns))
    assert event is not None and event.after is not None
    assert replace(event, position=postgres.position) == postgres
    for name, value in postgres.after.items():  # == alone would accept 1 == 1.0, naive vs aware
        assert type(event.after[name]) is type(value), name


def test_schemaless_event_equals_postgres_event_for_json_native_types() -> None:
    """Without schemas, ints, text, bools and text arrays still match the Postgres event."""
    row = {"id": 7, "note": "hello", "paid": True, "tags": ["a", "b"], "gone": None}
    postgres = ChangeEvent(
        op="insert",
        schema="public",
        table="orders",
        position=SourcePosition(kind="postgres", lsn=1, index=0),
        after=row,
        key={"id": 7},
        commit_time=COMMIT,
        txid=777,
    )
    event = decode({"id": 7}, value_doc("c", after=row))
    assert event is not None and replace(event, position=postgres.position) == postgres


def test_already_parsed_json_decodes_the_same() -> None:
    """decode_debezium_json (plain json.loads input, floats as float) equals decode_debezium."""
    columns = [
        ID,
        col("amount", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
        col("w", "float64"),
    ]
    value = value_doc("c", after={"id": 1, "amount": 12.5, "w": 0.1}, columns=columns)
    event = decode_debezium_json(
        {"id": 1}, json.loads(enc(value)), topic=TOPIC, partition=3, offset=42
    )
    assert event == decode({"id": 1}, value)
    assert event is not None and event.after == {"id": 1, "amount": Decimal("12.5"), "w": 0.1}


# -- poison ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{not json", "value is not valid JSON"),
        (b"\xff\xfe", enc(value_doc("c", after={"id": 1})), "key is not valid JSON"),
        (None, b"[1, 2]", "not an object"),
        (None, enc({"id": 1, "name": "flattened row"}), "unknown envelope shape"),
        (None, enc(value_doc("x", after={"id": 1})), "unknown op 'x'"),
        (None, enc({"op": "c", "after": {"id": 1}}), "no 'source' object"),
        (None, enc(value_doc("c", after={"id": 1}, table="")), "source.table is missing"),
        (None, enc(value_doc("c", after=None)), "without an 'after' row"),
        (None, enc(value_doc("c", after={"id": 1}, txid="x")), "txId is not an integer"),
        (
            None,
            enc(value_doc("c", after={"id": 1, "extra": 2}, columns=[ID])),
            "after.extra is not in the schema",
        ),
        (
            None,
            enc(value_doc("c", after={"id": "seven"}, columns=[ID])),
            "after.id: cannot decode int32 value 'seven'",
        ),
        (
            None,
            enc(
                value_doc(
                    "c",
                    after={"v": "***"},
                    columns=[
                        col(
                            "v",
                            "bytes",
                            "org.apache.kafka.connect.data.Decimal",
                            parameters={"scale": "2"},
                        )
                    ],
                )
            ),
            "after.v: cannot decode org.apache.kafka.connect.data.Decimal",
        ),
        (
            None,
            enc(
                value_doc(
                    "c", after={"v": "nope"}, columns=[col("v", "string", "io.debezium.data.Uuid")]
                )
            ),
            "cannot decode io.debezium.data.Uuid",
        ),
        (
            None,
            enc(
                value_doc(
                    "c", after={"v": "{"}, columns=[col("v", "string", "io.debezium.data.Json")]
                )
            ),
            "cannot decode io.debezium.data.Json",
        ),
        (
            None,
            enc(value_doc("c", after={"v": 1}, columns=[col("v", "weird")])),
            "unknown Connect type 'weird'",
        ),
        (
            None,
            enc({"schema": {"type": "string"}, "payload": value_doc("c", after={"id": 1})}),
            "is not a struct with fields",
        ),
        (enc("just-a-string"), enc(value_doc("c", after={"id": 1})), "key payload is str"),
    ],
)
def test_undecodable_records_raise_poison_with_reason(
    key: bytes | None, value: bytes, reason: str
) -> None:
    """Invalid JSON, unknown shapes and undecodable values raise PoisonMessage saying why."""
    with pytest.raises(PoisonMessage) as info:
        decode_debezium(key, value, topic=TOPIC, partition=3, offset=42)
    assert reason in str(info.value)
    assert str(info.value).startswith(f"{TOPIC}[3]@42: ")
    assert isinstance(info.value, SourceError)


# -- plain JSON -----------------------------------------------------------------------------------


def plain(doc: Any, mapping: Any) -> ChangeEvent | None:
    return decode_plain_json(enc(doc), mapping, topic="rows", partition=0, offset=9)


def test_plain_json_follows_dotted_paths() -> None:
    """A mapped record gives table, op, rows and key from the configured dotted paths."""
    mapping = {
        "table": "meta.table",
        "op": "meta.kind",
        "before": "data.old",
        "after": "data.new",
        "key": "meta.pk",
    }
    doc = {
        "meta": {"table": "sales.orders", "kind": "u", "pk": {"id": 3}},
        "data": {"old": {"id": 3, "s": "new"}, "new": {"id": 3, "s": "paid"}},
    }
    event = plain(doc, mapping)
    assert event == ChangeEvent(
        op="update",
        schema="sales",
        table="orders",
        position=SourcePosition(kind="kafka", topic="rows", partition=0, offset=9),
        before={"id": 3, "s": "new"},
        after={"id": 3, "s": "paid"},
        key={"id": 3},
    )
    assert event.changed == ["s"]


def test_plain_json_whole_record_with_constant_table() -> None:
    """With only `=table` mapped the whole record is an inserted row of that table in public."""
    event = plain({"id": 1, "price": 2.5}, {"table": "=orders"})
    assert event is not None
    assert (event.op, event.schema, event.table, event.after) == (
        "insert",
        "public",
        "orders",
        {"id": 1, "price": 2.5},
    )
    assert type(event.after["price"]) is float


def test_plain_json_delete_row_becomes_before() -> None:
    """A delete op over the whole record puts the row in `before`."""
    event = plain({"t": "orders", "op": "delete", "id": 1}, JsonMapping(table="t", op="op"))
    assert event is not None and (event.op, event.before, event.after) == (
        "delete",
        {"t": "orders", "op": "delete", "id": 1},
        None,
    )
    assert decode_plain_json(None, {"table": "=t"}, topic="rows", partition=0, offset=1) is None


def test_plain_json_bad_mapping_and_bad_records() -> None:
    """Unknown mapping keys are a ConfigError; missing table or unknown op are poison."""
    with pytest.raises(ConfigError, match="unknown keys"):
        JsonMapping.from_mapping({"table": "t", "tabel": "x"})
    with pytest.raises(ConfigError, match="'table' is required"):
        JsonMapping.from_mapping({"op": "o"})
    with pytest.raises(PoisonMessage, match=r"rows\[0\]@9: table field 't' is missing"):
        plain({"id": 1}, {"table": "t"})
    with pytest.raises(PoisonMessage, match="not a known op"):
        plain({"t": "x", "o": "upsert"}, {"table": "t", "op": "o"})
    with pytest.raises(PoisonMessage, match="not an object"):
        plain({"t": "x", "a": [1]}, {"table": "t", "after": "a"})
