"""Declared column types (`kafka.column_types`): schemaless Debezium records and plain JSON rows
decode to the values the Postgres source gives; mistakes are config errors or poison records."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from task_bridge.config import load_config
from task_bridge.errors import ConfigError
from task_bridge.events import UNCHANGED
from task_bridge.sources.debezium import MARKER, PoisonMessage, decode_debezium, decode_plain_json
from task_bridge.sources.kafka_connect import column_types, declared_type
from tests.unit.test_debezium import REF, TOPIC, enc, key_doc, value_doc


@pytest.mark.parametrize(
    ("pg_type", "wire", "value"),
    [
        ("numeric(12,2)", "12.50", Decimal("12.50")),  # decimal.handling.mode=string
        ("numeric", Decimal("-0.07"), Decimal("-0.07")),  # mode=double, parsed exactly
        ("NUMERIC", "Infinity", Decimal("Infinity")),
        ("decimal(5)", 12, Decimal(12)),
        ("timestamptz", "2026-01-01T08:00:00.123456Z", datetime(2026, 1, 1, 8, 0, 0, 123456, UTC)),
        ("timestamp with time zone", "infinity", "infinity"),
        (
            "timestamp(3) with time zone",
            "2026-01-01T08:00:00Z",
            datetime(2026, 1, 1, 8, tzinfo=UTC),
        ),
        ("timestamp", 1_000_001, datetime(1970, 1, 1, 0, 0, 1, 1)),  # MicroTimestamp
        ("timestamp(3)", 1_001, datetime(1970, 1, 1, 0, 0, 1, 1000)),  # Timestamp (ms)
        ("timestamp without time zone", "2026-01-01T10:00:00", datetime(2026, 1, 1, 10)),
        ("date", 1, date(1970, 1, 2)),
        ("date", "2026-03-04", date(2026, 3, 4)),
        ("time", 3_600_000_001, time(1, 0, 0, 1)),
        ("time(0)", 3_600_000, time(1)),
        ("timetz", "10:00:00Z", time.fromisoformat("10:00:00Z")),
        ("interval", 90_000_000, timedelta(seconds=90)),
        ("jsonb", '{"k": [1, 2.5, null]}', {"k": [1, 2.5, None]}),
        ("json", "[]", []),
        ("uuid", str(REF), REF),
        ("bytea", "AAH/", b"\x00\x01\xff"),
        ("text[]", ["a", None], ["a", None]),
        ("numeric[]", ["1.10", Decimal("2")], [Decimal("1.10"), Decimal(2)]),
        ("uuid[]", [str(REF)], [REF]),
        ("double precision", Decimal("2.5"), 2.5),
        ("bigint", 7, 7),
        ("character varying(20)", "x", "x"),
        ("Double  Precision", Decimal("2.5"), 2.5),
    ],
)
def test_declared_types_decode_schemaless_values(pg_type: str, wire: Any, value: Any) -> None:
    decoded = declared_type(pg_type)(wire)
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("pg_type", ["numerc", "numeric(x)", "bit(3)", "timestamp(3"])
def test_unknown_types_and_modifiers_are_refused(pg_type: str) -> None:
    with pytest.raises(ValueError, match=r"unknown column type|type modifier"):
        declared_type(pg_type)


def test_schemaless_debezium_record_with_declared_types() -> None:
    """Declared columns decode by their type (key too), others as JSON gives them; NULL and the
    unchanged-TOAST marker are kept; the declaration is per table."""
    types = column_types({"orders": {"id": "bigint", "amount": "numeric", "ref": "uuid"}})
    after = {"id": 1, "amount": "12.50", "ref": MARKER, "note": "12.50", "tags": None}

    def decode(table: str) -> Any:
        value = enc(value_doc("c", after=after, table=table))
        return decode_debezium(
            enc(key_doc({"id": 1})), value, topic=TOPIC, partition=0, offset=1, column_types=types
        )

    event = decode("orders")
    assert event.after == {
        "id": 1,
        "amount": Decimal("12.50"),
        "ref": UNCHANGED,
        "note": "12.50",
        "tags": None,
    }
    assert event.key == {"id": 1}
    assert decode("invoices").after["amount"] == "12.50"


def test_a_value_that_does_not_fit_its_declared_type_is_a_poison_record() -> None:
    types = column_types({"public.orders": {"ref": "uuid"}})
    value = enc(value_doc("c", after={"id": 1, "ref": "not-a-uuid"}))
    with pytest.raises(PoisonMessage) as err:
        decode_debezium(None, value, topic=TOPIC, partition=2, offset=9, column_types=types)
    assert str(err.value).startswith(f"{TOPIC}[2]@9: after.ref: cannot decode 'not-a-uuid'")


def test_plain_json_rows_use_declared_types() -> None:
    types = column_types({"shop.orders": {"amount": "numeric", "at": "timestamptz"}})
    row = {"table": "shop.orders", "amount": 1.25, "at": "2026-01-01T10:00:00+02:00", "n": 1.5}
    event = decode_plain_json(
        enc(row), {"table": "table"}, topic="rows", partition=0, offset=1, column_types=types
    )
    assert event is not None and event.after is not None
    assert event.after["amount"] == Decimal("1.25")
    assert event.after["at"] == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert event.after["n"] == 1.5 and isinstance(event.after["n"], float)


def test_an_unknown_declared_type_is_a_config_error_naming_file_line_and_path(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "source:\n"
        "  kafka:\n"
        "    bootstrap_servers: localhost:9092\n"
        "    topics: [app.public.orders]\n"
        "    column_types:\n"
        "      public.orders: {amount: nummeric}\n"
        "targets: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(config, env={})
    message = str(err.value)
    assert (
        "bridge.yaml:6: source.kafka.column_types.public.orders.amount:"
        " unknown column type 'nummeric'"
    ) in message
    assert "numeric" in message.split("known:")[1]
