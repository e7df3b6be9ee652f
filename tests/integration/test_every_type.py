"""The every-type oracle (issue #14 item 7, acceptance f): one column of every built-in type, a
domain, an enum, a composite, ranges, multiranges and arrays of them, with edge values; what
the Postgres source hands to rules for an insert, an update (after and before) and a delete is
what psycopg's own SELECT of the same row returns, in a session set up as the replication one.

Where the SELECT's value is not what the bridge documents, the oracle says so per column:
- a value Python cannot hold ('infinity', BC dates, 24:00, year > 9999) makes psycopg's SELECT
  raise; the bridge keeps the server's text, so the oracle is `col::text`;
- psycopg_binary's C interval loader wraps years past ~5.8 million around silently; the oracle
  uses psycopg's Python one;
- an array of a domain comes to a SELECT as an unknown type (text); the bridge decodes it as an
  array of the base type, so the oracle is the cast to that array type.
A generated column is in the event on 18 (the bridge's publication sets
`publish_generated_columns = stored`) and absent before (pgoutput never sends it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.datetime import IntervalLoader

from task_bridge.events import ChangeEvent
from task_bridge.jsonenc import dumps_payload
from task_bridge.sources.postgres.replication import SESSION_OPTIONS
from task_bridge.sources.postgres.slot import GENERATED_COLUMNS_MIN
from task_bridge.sources.postgres.source import PostgresSource
from tests.integration.test_postgres_source import read_until

SLOT = PUB = "every_type"

TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'with space');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN d_int AS int;
CREATE DOMAIN d_num AS numeric(12, 3);
CREATE DOMAIN d_jsonb AS jsonb;
CREATE DOMAIN d_text AS text CHECK (VALUE <> '');
CREATE DOMAIN d_pos AS d_int CHECK (VALUE > 0);
"""

# (column, type, insert value, update value): SQL literals
COLUMNS: list[tuple[str, str, str, str]] = [
    ("c_bool", "bool", "true", "false"),
    ("c_int2", "int2", "-32768", "32767"),
    ("c_int4", "int4", "-2147483648", "2147483647"),
    ("c_int8", "int8", "-9223372036854775808", "9223372036854775807"),
    ("c_numeric", "numeric", "'-123456789012345678901234567890.000000000001'", "'NaN'"),
    ("c_numeric_inf", "numeric", "'Infinity'", "'-Infinity'"),
    ("c_numeric_scale", "numeric(6, 2)", "'0.10'", "'-9999.99'"),
    ("c_float4", "float4", "'3.4028235e38'", "'-1.1754944e-38'"),
    ("c_float8", "float8", "'1.7976931348623157e308'", "'5e-324'"),
    ("c_money", "money", "'-92233720368547758.08'", "'12.34'"),
    ("c_text", "text", "E'tab\\there \\u00e9\\U0001F600 \"q\" \\\\'", "''"),
    ("c_varchar", "varchar(10)", "'abc'", "'0123456789'"),
    ("c_char", "char(3)", "'a'", "'xyz'"),
    ("c_name", "name", "'a name'", "'pg_class'"),
    ("c_bytea", "bytea", "'\\x00ff10'", "''"),
    ("c_date", "date", "'2026-02-28'", "'0001-01-01'"),
    ("c_date_edge", "date", "'infinity'", "'0044-03-15 BC'"),
    ("c_time", "time", "'23:59:59.999999'", "'24:00:00'"),
    ("c_timetz", "timetz", "'00:00:00+15:59'", "'12:34:56.5-08'"),
    ("c_timestamp", "timestamp", "'2026-01-02 03:04:05.123456'", "'10000-01-01 00:00:00'"),
    ("c_timestamptz", "timestamptz", "'2026-06-30 23:59:59.5+05:30'", "'-infinity'"),
    ("c_interval", "interval", "'1 year 2 mons 3 days 04:05:06.789'", "'-178000000 years'"),
    (
        "c_uuid",
        "uuid",
        "'a8098c1a-f86e-11da-bd1a-00112444be1e'",
        "'00000000-0000-0000-0000-000000000000'",
    ),
    ("c_json", "json", '\'{"a": [1, 2.5, null, true], "b": {"c": "d"}}\'', "'[]'"),
    ("c_jsonb", "jsonb", '\'{"n": 123456789012345678901234567890, "e": "\\u00e9"}\'', "'\"s\"'"),
    ("c_jsonpath", "jsonpath", "'$.a[*] ? (@ > 1)'", "'$'"),
    ("c_inet", "inet", "'192.168.0.1/24'", "'::1'"),
    ("c_cidr", "cidr", "'10.0.0.0/8'", "'2001:db8::/32'"),
    ("c_macaddr", "macaddr", "'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"),
    ("c_macaddr8", "macaddr8", "'08:00:2b:01:02:03:04:05'", "'00:00:00:00:00:00:00:00'"),
    ("c_point", "point", "'(1.5,-2)'", "'(0,0)'"),
    ("c_line", "line", "'{1,-1,0}'", "'{0,1,2}'"),
    ("c_lseg", "lseg", "'[(0,0),(1,1)]'", "'[(2,2),(3,3)]'"),
    ("c_box", "box", "'(1,1),(0,0)'", "'(3,3),(2,2)'"),
    ("c_path", "path", "'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"),
    ("c_polygon", "polygon", "'((0,0),(1,1),(1,0))'", "'((0,0),(2,2),(2,0))'"),
    ("c_circle", "circle", "'<(0,0),1.5>'", "'<(1,1),2>'"),
    ("c_bit", "bit(4)", "B'1010'", "B'0000'"),
    ("c_varbit", "varbit", "B'1'", "B''"),
    ("c_tsvector", "tsvector", "'a fat cat'", "''"),
    ("c_tsquery", "tsquery", "'fat & cat'", "'!a'"),
    ("c_oid", "oid", "4294967295", "0"),
    ("c_pg_lsn", "pg_lsn", "'16/B374D848'", "'0/0'"),
    ("c_int4range", "int4range", "'[1,10)'", "'empty'"),
    ("c_int8range", "int8range", "'(,5]'", "'[-9223372036854775808,)'"),
    ("c_numrange", "numrange", "'[1.5,2.5]'", "'(,)'"),
    ("c_daterange", "daterange", "'[2026-01-01,2026-02-01)'", "'[2026-01-01,infinity)'"),
    ("c_tsrange", "tsrange", "'[2026-01-01 00:00,2026-01-02 00:00)'", "'empty'"),
    ("c_tstzrange", "tstzrange", "'[2026-01-01 00:00+00,)'", "'(,2026-01-01 00:00+02]'"),
    ("c_int4multirange", "int4multirange", "'{[1,3), [5,7)}'", "'{}'"),
    ("c_datemultirange", "datemultirange", "'{[2026-01-01,2026-01-05)}'", "'{}'"),
    ("c_enum", "mood", "'with space'", "'sad'"),
    ("c_composite", "pair", "ROW(1, 'a \"b\", c')", "ROW(NULL, NULL)"),
    ("c_d_int", "d_int", "-7", "2147483647"),
    ("c_d_num", "d_num", "'1.5'", "'-999999999.999'"),
    ("c_d_jsonb", "d_jsonb", '\'{"x": [1, {"y": null}]}\'', "'null'"),
    ("c_d_text", "d_text", "'t'", "'ü'"),
    ("c_d_pos", "d_pos", "1", "42"),
    ("a_int4", "int4[]", "'{1,NULL,-3}'", "'{}'"),
    ("a_int4_2d", "int4[]", "'{{1,2},{3,4}}'", "'[0:1]={5,6}'"),
    ("a_text", "text[]", '\'{a,"b c",NULL,"NULL","\\\\"}\'', "'{\"\"}'"),
    ("a_numeric", "numeric[]", "'{1.50,NaN,Infinity}'", "'{0}'"),
    ("a_float8", "float8[]", "'{NaN,Infinity,-Infinity,1.5}'", "'{-0}'"),
    ("a_bool", "bool[]", "'{t,f,NULL}'", "'{}'"),
    ("a_date", "date[]", "'{2026-01-01,infinity}'", "'{2026-01-01}'"),
    ("a_timestamptz", "timestamptz[]", "'{\"2026-01-01 00:00:00+00\"}'", "'{}'"),
    ("a_uuid", "uuid[]", "'{a8098c1a-f86e-11da-bd1a-00112444be1e}'", "'{}'"),
    ("a_jsonb", "jsonb[]", "ARRAY['{\"a\": 1}'::jsonb, '[2]']", "'{}'"),
    ("a_int4range", "int4range[]", "'{\"[1,2)\",empty}'", "'{}'"),
    ("a_enum", "mood[]", "'{happy,\"with space\"}'", "'{}'"),
    ("a_composite", "pair[]", "ARRAY[ROW(1, 'x')::pair, ROW(2, NULL)::pair]", "'{}'"),
    ("a_d_int", "d_int[]", "'{1,2,NULL}'", "'{}'"),
    ("a_d_num", "d_num[]", "'{1.5,-2}'", "'{3}'"),
]
ORACLE = {"a_d_int": "a_d_int::int4[]", "a_d_num": "a_d_num::numeric[]"}
"""Columns whose SELECT is not the documented value as it is (see the module docstring)."""


INSERT_JSON: dict[str, Any] = {
    "c_numeric": "-123456789012345678901234567890.000000000001",
    "c_numeric_inf": "Infinity",
    "c_float8": 1.7976931348623157e308,
    "c_bytea": "AP8Q",
    "c_date_edge": "infinity",
    "c_timetz": "00:00:00+15:59",
    "c_timestamptz": "2026-06-30T18:29:59.500000+00:00",
    "c_interval": "P428DT4H5M6.789S",
    "c_jsonb": {"n": 123456789012345678901234567890, "e": "\u00e9"},
    "c_inet": "192.168.0.1/24",
    "c_cidr": "10.0.0.0/8",
    "c_int4range": {"lower": 1, "upper": 10, "bounds": "[)"},
    "c_int8range": {"lower": None, "upper": 6, "bounds": "()"},
    "c_int4multirange": [
        {"lower": 1, "upper": 3, "bounds": "[)"},
        {"lower": 5, "upper": 7, "bounds": "[)"},
    ],
    "c_composite": '(1,"a ""b"", c")',
    "c_d_num": "1.500",
    "a_float8": ["NaN", "Infinity", "-Infinity", 1.5],
    "a_numeric": ["1.50", "NaN", "Infinity"],
    "a_date": "{2026-01-01,infinity}",
    "a_enum": '{happy,"with space"}',
}
"""What the insert's values are as JSON (what a lone `{{ after.col }}` sends)."""
UPDATE_JSON: dict[str, Any] = {
    "c_numeric": "NaN",
    "c_time": "24:00:00",
    "c_timetz": "12:34:56.500000-08:00",
    "c_interval": "-178000000 years",
    "c_int4range": {"empty": True},
    "c_int4multirange": [],
    "c_float8": 5e-324,
    "c_bytea": "",
}


def _ddl() -> str:
    columns = ",\n".join(f"    {name} {type_}" for name, type_, _, _ in COLUMNS)
    return (
        f"CREATE TABLE public.every (\n    id int PRIMARY KEY,\n{columns},\n"
        "    c_generated int GENERATED ALWAYS AS (id * 2) STORED\n);\n"
        "ALTER TABLE public.every REPLICA IDENTITY FULL;"
    )


@pytest.fixture
def source(pg_dsn: str) -> Iterator[PostgresSource]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(TYPES_DDL)
        conn.execute(_ddl())
    made = PostgresSource(pg_dsn, SLOT, PUB, ["public.every"], status_interval=0.5)
    made.open(None)
    try:
        yield made
    finally:
        made.close()


class PyIntervalLoader(IntervalLoader):
    """psycopg's Python interval loader (a subclass, so psycopg does not swap in its C one,
    which wraps years past ~5.8 million around)."""


def _selected(dsn: str) -> dict[str, Any]:
    """The row as psycopg's SELECT returns it, column by column, in the replication
    session's settings; `col::text` where psycopg cannot load the value."""
    row: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        conn.adapters.register_loader("interval", PyIntervalLoader)
        for name, *_ in COLUMNS:
            expr = sql.SQL(ORACLE.get(name, name))
            try:
                value = conn.execute(sql.SQL("SELECT {} FROM every").format(expr)).fetchone()
            except psycopg.DataError:
                query = sql.SQL("SELECT {}::text FROM every").format(sql.Identifier(name))
                value = conn.execute(query).fetchone()
            assert value is not None
            row[name] = value[0]
        row["id"] = conn.execute("SELECT id FROM every").fetchone()[0]  # type: ignore[index]
    return row


def _comparable(value: Any) -> Any:
    """Type and value, recursively; NaN equal to itself."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, Decimal) and value.is_nan():
        return ("Decimal", "NaN")
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_comparable(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _comparable(v) for k, v in value.items()})
    return (type(value).__name__, value)


def _assert_same(
    got: dict[str, Any] | None, want: dict[str, Any], what: str, generated: bool
) -> None:
    """`generated`: the server publishes generated columns (18, the bridge asks it to)."""
    assert got is not None, f"{what}: no row"
    if generated:
        assert got.pop("c_generated") == got["id"] * 2, f"{what}: the generated column"
    assert "c_generated" not in got, "pgoutput before 18 does not send generated columns"
    wrong = {
        name: (got.get(name), value)
        for name, value in want.items()
        if _comparable(got.get(name)) != _comparable(value)
    }
    assert not wrong, f"{what}: (bridge, SELECT) differ: {wrong}"


def _change(items: list[Any]) -> ChangeEvent:
    (event,) = [i for i in items if isinstance(i, ChangeEvent)]
    return event


def test_every_type_reaches_rules_as_psycopg_selects_it(
    pg_dsn: str, source: PostgresSource
) -> None:
    """Insert, update (after and before) and delete of one row of edge values: every column
    as the oracle SELECT has it, types included."""
    names = sql.SQL(", ").join(sql.Identifier(n) for n, *_ in COLUMNS)
    inserted = sql.SQL(", ").join(sql.SQL(v) for _, _, v, _ in COLUMNS)
    updated = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(n), sql.SQL(v)) for n, _, _, v in COLUMNS
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        generated = conn.info.server_version >= GENERATED_COLUMNS_MIN
        conn.execute(sql.SQL("INSERT INTO every (id, {}) VALUES (1, {})").format(names, inserted))
    first = _selected(pg_dsn)
    insert = _change(read_until(source, 1))
    _assert_same(insert.after, first, "insert after", generated)
    sent = json.loads(dumps_payload(insert.after))
    assert {name: sent[name] for name in INSERT_JSON} == INSERT_JSON

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE every SET {}").format(updated))
    second = _selected(pg_dsn)
    update = _change(read_until(source, 1))
    _assert_same(update.after, second, "update after", generated)
    _assert_same(update.before, first, "update before", generated)
    sent = json.loads(dumps_payload(update.after))
    assert {name: sent[name] for name in UPDATE_JSON} == UPDATE_JSON

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM every")
    delete = _change(read_until(source, 1))
    _assert_same(delete.before, second, "delete before", generated)
    assert delete.key == {"id": 1}
