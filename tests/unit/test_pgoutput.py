"""pgoutput decoder on hand-built proto-1 messages (layouts: shared/reference/pgoutput.md)."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from task_bridge.events import UNCHANGED, ChangeEvent
from task_bridge.sources.base import Commit, Poison
from task_bridge.sources.postgres.pgoutput import PgOutputDecoder

BOOL, INT4, INT8, TEXT, NUMERIC, DATE = 16, 23, 20, 25, 1700, 1082
TIMESTAMPTZ, JSONB, UUID_OID, INT4_ARRAY, TEXT_ARRAY = 1184, 3802, 2950, 1007, 1009
INTERVAL = 1186
ENUM_OID = 90001  # a user type: psycopg has no loader for it
OID = 16384
LSN, END_LSN, XID = 0x1_0000_1000, 0x1_0000_1080, 777
COMMIT_TIME = datetime(2026, 1, 1, 10, 4, 5, 123456, tzinfo=UTC)
COMMIT_MICROS = (COMMIT_TIME - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def relation(
    columns: list[tuple[int, str, int]],
    oid: int = OID,
    replident: bytes = b"d",
    schema: str = "public",
) -> bytes:
    """'R': oid, namespace, name, replica identity, then (flags, name, type, typmod) per column."""
    out = b"R" + struct.pack(">I", oid) + cstr(schema) + cstr("orders") + replident
    out += struct.pack(">h", len(columns))
    for flags, name, type_oid in columns:
        out += bytes([flags]) + cstr(name) + struct.pack(">Ii", type_oid, -1)
    return out


def tuple_data(*values: bytes | object | None) -> bytes:
    """TupleData: None -> 'n', UNCHANGED -> 'u', bytes -> 't' + length + text."""
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack(">I", len(value)) + value
    return out


def begin(lsn: int = LSN, xid: int = XID) -> bytes:
    return b"B" + struct.pack(">QqI", lsn, COMMIT_MICROS, xid)


def commit(lsn: int = LSN, end: int = END_LSN) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, lsn, end, COMMIT_MICROS)


def insert(*values: bytes | object | None, oid: int = OID) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tuple_data(*values)


def update(new: bytes, old: bytes | None = None, tag: bytes = b"", oid: int = OID) -> bytes:
    return b"U" + struct.pack(">I", oid) + (tag + old if old is not None else b"") + b"N" + new


def delete(old: bytes, tag: bytes, oid: int = OID) -> bytes:
    return b"D" + struct.pack(">I", oid) + tag + old


def decode(decoder: PgOutputDecoder, *messages: bytes) -> list[ChangeEvent | Commit | Poison]:
    out: list[ChangeEvent | Commit | Poison] = []
    for message in messages:
        out.extend(decoder.decode(message))
    return out


def events(items: list[ChangeEvent | Commit | Poison]) -> list[ChangeEvent]:
    return [item for item in items if isinstance(item, ChangeEvent)]


TYPED = [
    (1, "id", INT8),
    (0, "ok", BOOL),
    (0, "amount", NUMERIC),
    (0, "at", TIMESTAMPTZ),
    (0, "day", DATE),
    (0, "meta", JSONB),
    (0, "nums", INT4_ARRAY),
    (0, "tags", TEXT_ARRAY),
    (0, "ref", UUID_OID),
    (0, "mood", ENUM_OID),
    (0, "note", TEXT),
]
TYPED_ROW = (
    b"42",
    b"t",
    b"1234.50",
    b"2026-01-02 03:04:05.5+02",
    b"2026-03-04",
    b'{"a": [1, null], "b": "x"}',
    b"{1,2,3}",
    b'{a,"b c",NULL}',
    b"8c1b8d6a-3c1e-4a5e-9d8e-123456789abc",
    b"happy",
    None,
)
TYPED_VALUES: dict[str, Any] = {
    "id": 42,
    "ok": True,
    "amount": Decimal("1234.50"),
    "at": datetime(2026, 1, 2, 1, 4, 5, 500000, tzinfo=UTC),
    "day": date(2026, 3, 4),
    "meta": {"a": [1, None], "b": "x"},
    "nums": [1, 2, 3],
    "tags": ["a", "b c", None],
    "ref": UUID("8c1b8d6a-3c1e-4a5e-9d8e-123456789abc"),
    "mood": "happy",
    "note": None,
}


def test_insert_values_are_typed_by_oid() -> None:
    """Text values load by type OID (numeric, timestamptz, jsonb, arrays, uuid); unknown -> str."""
    items = decode(PgOutputDecoder(), relation(TYPED), begin(), insert(*TYPED_ROW), commit())
    (event,) = events(items)
    assert event.op == "insert" and (event.schema, event.table) == ("public", "orders")
    assert event.after == TYPED_VALUES
    assert event.after["at"].utcoffset() is not None
    assert event.before is None and event.key == {"id": 42}


def test_begin_and_commit_give_positions_time_and_txid() -> None:
    """Changes carry Begin's LSN, a 0-based index, tz-aware commit time and xid; Commit ends."""
    decoder = PgOutputDecoder()
    items = decode(
        decoder,
        relation([(1, "id", INT4)]),
        begin(),
        insert(b"1"),
        insert(b"2"),
        insert(b"3"),
        commit(),
    )
    changes = events(items)
    assert [(e.position.lsn, e.position.index) for e in changes] == [(LSN, 0), (LSN, 1), (LSN, 2)]
    assert {e.position.kind for e in changes} == {"postgres"}
    assert changes[0].commit_time == COMMIT_TIME
    assert changes[0].txid == XID
    assert items[-1] == Commit("1/1080")
    assert not decoder.in_transaction
    decode(decoder, begin(lsn=LSN + 0x200), insert(b"4"))
    assert decoder.in_transaction
    assert events(decoder.decode(insert(b"5")))[0].position.index == 1  # index restarts per txn


def test_update_without_old_tuple_and_unchanged_toast() -> None:
    """An update with no old tuple has before=None; 'u' columns are UNCHANGED, 'n' is None."""
    columns = [(1, "id", INT4), (0, "body", TEXT), (0, "note", TEXT)]
    items = decode(
        PgOutputDecoder(),
        relation(columns),
        begin(),
        update(tuple_data(b"7", UNCHANGED, None)),
    )
    (event,) = events(items)
    assert event.op == "update" and event.before is None
    assert event.after == {"id": 7, "body": UNCHANGED, "note": None}
    assert event.after["body"] is UNCHANGED
    assert event.key == {"id": 7} and event.changed == []


def test_update_with_key_tuple_gives_key_only_before() -> None:
    """A 'K' old tuple (the key changed) gives `before` with the identity columns only."""
    columns = [(1, "id", INT4), (0, "status", TEXT)]
    old = tuple_data(b"7", None)
    items = decode(
        PgOutputDecoder(),
        relation(columns),
        begin(),
        update(tuple_data(b"8", b"paid"), old, b"K"),
    )
    (event,) = events(items)
    assert event.before == {"id": 7}
    assert event.after == {"id": 8, "status": "paid"}
    assert event.key == {"id": 8}


def test_update_with_full_old_tuple_gives_full_before() -> None:
    """An 'O' old tuple (REPLICA IDENTITY FULL) gives the whole old row and `changed`."""
    columns = [(1, "id", INT4), (1, "status", TEXT), (1, "amount", NUMERIC)]
    old = tuple_data(b"7", b"new", b"1.00")
    new = tuple_data(b"7", b"paid", b"1.00")
    decoder = PgOutputDecoder(primary_keys={OID: ("id",)})
    items = decode(decoder, relation(columns, replident=b"f"), begin(), update(new, old, b"O"))
    (event,) = events(items)
    assert event.before == {"id": 7, "status": "new", "amount": Decimal("1.00")}
    assert event.changed == ["status"]
    assert event.key == {"id": 7}  # the primary key, not every column flagged by FULL


def test_delete_with_key_and_with_full_old_tuple() -> None:
    """Deletes carry `before` only: key columns for 'K', the whole row for 'O'; key from before."""
    columns = [(1, "id", INT4), (0, "status", TEXT)]
    decoder = PgOutputDecoder()
    keyed = decode(
        decoder, relation(columns), begin(), delete(tuple_data(b"7", None), b"K"), commit()
    )
    full = decode(
        decoder,
        relation(columns, replident=b"f"),
        begin(),
        delete(tuple_data(b"9", b"paid"), b"O"),
    )
    (by_key,) = events(keyed)
    (by_row,) = events(full)
    assert (by_key.op, by_key.after, by_key.before, by_key.key) == (
        "delete",
        None,
        {"id": 7},
        {"id": 7},
    )
    assert by_row.before == {"id": 9, "status": "paid"} and by_row.row == by_row.before
    assert by_row.key == {"id": 9}


def test_truncate_gives_one_event_per_relation() -> None:
    """Truncate of two relations yields two op=truncate events with consecutive indexes."""
    decoder = PgOutputDecoder()
    other = relation([(1, "id", INT4)], oid=OID + 1, schema="sales")
    truncate = b"T" + struct.pack(">IB", 2, 1) + struct.pack(">II", OID, OID + 1)
    items = decode(decoder, relation([(1, "id", INT4)]), other, begin(), truncate, commit())
    changes = events(items)
    assert [(e.op, e.schema, e.position.index) for e in changes] == [
        ("truncate", "public", 0),
        ("truncate", "sales", 1),
    ]
    assert all(e.after is None and e.before is None for e in changes)


def test_relation_resend_replaces_the_cached_definition() -> None:
    """A second Relation for the same OID (ALTER TABLE) replaces the columns used to decode."""
    decoder = PgOutputDecoder()
    decode(decoder, relation([(1, "id", INT4)]), begin())
    first = events(decoder.decode(insert(b"1")))[0]
    decode(decoder, relation([(1, "id", INT4), (0, "status", TEXT)]))
    second = events(decoder.decode(insert(b"2", b"new")))[0]
    assert first.after == {"id": 1}
    assert second.after == {"id": 2, "status": "new"}


def test_type_origin_message_and_unknown_kinds_are_ignored() -> None:
    """Type, Origin, Message and unknown message kinds produce nothing and keep the txn state."""
    decoder = PgOutputDecoder()
    type_msg = b"Y" + struct.pack(">I", ENUM_OID) + cstr("public") + cstr("mood")
    origin = b"O" + struct.pack(">Q", 5) + cstr("upstream")
    message = b"M" + b"\x01" + struct.pack(">Q", 1) + cstr("prefix") + struct.pack(">I", 2) + b"hi"
    decode(decoder, relation([(1, "id", INT4)]), begin())
    assert decode(decoder, type_msg, origin, message, b"Z\x00\x01") == []
    assert decoder.in_transaction
    assert events(decoder.decode(insert(b"3")))[0].position.index == 0


def test_values_python_cannot_hold_stay_text() -> None:
    """Dates and timestamps such as 'infinity' keep their text instead of failing the stream."""
    columns = [(1, "id", INT4), (0, "day", DATE), (0, "at", TIMESTAMPTZ)]
    items = decode(
        PgOutputDecoder(), relation(columns), begin(), insert(b"1", b"infinity", b"-infinity")
    )
    assert events(items)[0].after == {"id": 1, "day": "infinity", "at": "-infinity"}


def test_empty_namespace_means_pg_catalog() -> None:
    """An empty namespace in a Relation message stands for pg_catalog."""
    items = decode(PgOutputDecoder(), relation([(1, "id", INT4)], schema=""), begin(), insert(b"1"))
    assert events(items)[0].schema == "pg_catalog"


def test_change_for_unknown_relation_is_poison() -> None:
    """A change whose relation OID was never described is one Poison keeping the message
    (base64), and the changes after it still decode."""
    decoder = PgOutputDecoder()
    items = decode(decoder, begin(), insert(b"1"), relation([(1, "id", INT4)]), insert(b"2"))
    poison, event = items
    assert isinstance(poison, Poison) and "Relation message" in poison.reason
    assert poison.table is None and poison.raw["message_b64"]
    assert isinstance(event, ChangeEvent) and event.after == {"id": 2}
    assert (poison.position.index, event.position.index) == (0, 1)


def test_binary_tuple_data_is_poison() -> None:
    """Binary values ('b') were never requested: the change is a Poison, not garbage."""
    message = b"I" + struct.pack(">I", OID) + b"N" + struct.pack(">h", 1) + b"b\0\0\0\x01x"
    (poison,) = decode(PgOutputDecoder(), relation([(1, "id", INT4)]), begin(), message)
    assert isinstance(poison, Poison) and "binary" in poison.reason
    assert poison.raw["after"] == {"id": "(binary)"}


def test_a_value_no_loader_takes_is_poison_with_the_row_as_text() -> None:
    """A jsonb nested deeper than Python's recursion limit costs its change only: a Poison
    naming the column and type, with the key and every column's text; the next change and
    the commit decode as usual."""
    columns = [(1, "id", INT4), (0, "meta", JSONB), (0, "note", TEXT)]
    deep = b"[" * 5000 + b"]" * 5000
    decoder = PgOutputDecoder()
    items = decode(
        decoder,
        relation(columns),
        begin(),
        insert(b"7", deep, None),
        insert(b"8", b"[]", b"x"),
        commit(),
    )
    poison, event, done = items
    assert isinstance(poison, Poison)
    assert poison.reason.startswith(
        "cannot decode this insert of public.orders: column 'meta' (jsonb): RecursionError"
    )
    assert poison.table == "public.orders" and poison.key == {"id": "7"}
    assert poison.raw["after"]["id"] == "7" and poison.raw["after"]["note"] is None
    assert (
        poison.raw["after"]["meta"].startswith("[[[")
        and "10000 bytes" in poison.raw["after"]["meta"]
    )
    assert poison.position.key() == "pg:1/1000:0"
    assert isinstance(event, ChangeEvent) and event.after == {"id": 8, "meta": [], "note": "x"}
    assert event.position.index == 1 and isinstance(done, Commit)


def test_a_cut_short_tuple_is_poison_with_what_could_be_read() -> None:
    """A tuple whose bytes end early keeps the columns before the cut and says where."""
    columns = [(1, "id", INT4), (0, "note", TEXT)]
    message = insert(b"5", b"hello")[:-3]
    (poison,) = decode(PgOutputDecoder(), relation(columns), begin(), message)
    assert isinstance(poison, Poison)
    assert poison.raw["after"]["id"] == "5" and "(unreadable)" in poison.raw["after"]


def test_intervals_load_exactly_or_stay_text() -> None:
    """Intervals as the `postgres` IntervalStyle writes them (a year 365 days, a month 30);
    one past `timedelta` keeps its text (psycopg's C loader wrapped it to a wrong value)."""
    columns = [(1, "id", INT4), (0, "a", INTERVAL), (0, "b", INTERVAL), (0, "c", INTERVAL)]
    row = (
        b"1",
        b"1 year 2 mons 3 days 04:05:06.789",
        b"-1 days +02:03:00.000001",
        b"-178000000 years",
    )
    (event,) = events(decode(PgOutputDecoder(), relation(columns), begin(), insert(*row)))
    assert event.after == {
        "id": 1,
        "a": timedelta(days=428, hours=4, minutes=5, seconds=6, milliseconds=789),
        "b": timedelta(days=-1, hours=2, minutes=3, microseconds=1),
        "c": "-178000000 years",
    }
