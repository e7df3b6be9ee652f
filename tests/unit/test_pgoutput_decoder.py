"""pgoutput decoding on hand-built messages (layouts from the protocol docs)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bridge.errors import SourceError
from bridge.events import UNCHANGED, ChangeEvent
from bridge.sources.base import Commit
from bridge.sources.postgres.pgoutput import PgOutputDecoder

INT8, TEXT, NUMERIC, TIMESTAMPTZ, JSONB, INT4_ARRAY = 20, 25, 1700, 1184, 3802, 1007
COLUMNS = [
    (1, "id", INT8),
    (0, "status", TEXT),
    (0, "amount", NUMERIC),
    (0, "at", TIMESTAMPTZ),
    (0, "meta", JSONB),
    (0, "nums", INT4_ARRAY),
]


def relation(oid: int = 16384, replident: bytes = b"d") -> bytes:
    body = struct.pack(">I", oid) + b"public\0orders\0" + replident
    body += struct.pack(">h", len(COLUMNS))
    for flags, name, type_oid in COLUMNS:
        body += bytes([flags]) + name.encode() + b"\0" + struct.pack(">Ii", type_oid, -1)
    return b"R" + body


def tuple_data(*values: bytes | str | None) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == "u":
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack(">I", len(value)) + value
    return out


ROW = (b"7", b"paid", b"12.50", b"2026-01-02 03:04:05+00", b'{"a": 1}', b"{1,2}")
BEGIN = b"B" + struct.pack(">QqI", 0x1000, 0, 77)
COMMIT = b"C" + struct.pack(">BQQq", 0, 0x1000, 0x1010, 0)


def decode_all(*messages: bytes) -> list[ChangeEvent | Commit]:
    decoder = PgOutputDecoder()
    out: list[ChangeEvent | Commit] = []
    for message in messages:
        out.extend(decoder.decode(message))
    return out


def test_insert_is_typed_and_positioned() -> None:
    """Insert values are loaded by type OID; position = commit LSN + index; Commit follows."""
    insert = b"I" + struct.pack(">I", 16384) + b"N" + tuple_data(*ROW)
    event, second, commit = decode_all(relation(), BEGIN, insert, insert, COMMIT)
    assert isinstance(event, ChangeEvent) and isinstance(second, ChangeEvent)
    assert event.after == {
        "id": 7,
        "status": "paid",
        "amount": Decimal("12.50"),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "meta": {"a": 1},
        "nums": [1, 2],
    }
    assert event.key == {"id": 7} and event.txid == 77
    assert event.commit_time == datetime(2000, 1, 1, tzinfo=UTC)
    assert (event.position.lsn, event.position.index, second.position.index) == (0x1000, 0, 1)
    assert commit == Commit("0/1010")


def test_update_with_key_old_tuple_and_unchanged_toast() -> None:
    """'K' gives key-only `before`; 'u' values become UNCHANGED; NULL stays None."""
    new = tuple_data(b"8", b"shipped", None, "u", "u", None)
    key = tuple_data(b"7", None, None, None, None, None)
    update = b"U" + struct.pack(">I", 16384) + b"K" + key + b"N" + new
    (event,) = [e for e in decode_all(relation(), BEGIN, update) if isinstance(e, ChangeEvent)]
    assert event.op == "update" and event.before == {"id": 7}
    assert event.after is not None
    assert event.after["at"] is UNCHANGED and event.after["amount"] is None
    assert event.changed == []


def test_update_with_full_old_tuple_and_delete() -> None:
    """'O' (REPLICA IDENTITY FULL) gives the whole old row; deletes carry `before` only."""
    old = tuple_data(*ROW)
    new = tuple_data(b"7", b"shipped", *ROW[2:])
    update = b"U" + struct.pack(">I", 16384) + b"O" + old + b"N" + new
    delete = b"D" + struct.pack(">I", 16384) + b"O" + old
    update_event, delete_event = [
        e
        for e in decode_all(relation(replident=b"f"), BEGIN, update, delete)
        if isinstance(e, ChangeEvent)
    ]
    assert update_event.changed == ["status"]
    assert delete_event.op == "delete" and delete_event.after is None
    assert delete_event.row == delete_event.before and delete_event.key == {"id": 7}


def test_truncate_type_origin_and_message() -> None:
    """Truncate gives one event per relation; Type, Origin and Message give nothing."""
    truncate = b"T" + struct.pack(">IB", 1, 0) + struct.pack(">I", 16384)
    type_msg = b"Y" + struct.pack(">I", 99999) + b"public\0mood\0"
    origin = b"O" + struct.pack(">Q", 5) + b"upstream\0"
    message = b"M" + b"\x01" + struct.pack(">Q", 1) + b"prefix\0" + struct.pack(">I", 2) + b"hi"
    items = decode_all(relation(), BEGIN, type_msg, origin, message, truncate)
    assert [(e.op, e.table) for e in items if isinstance(e, ChangeEvent)] == [
        ("truncate", "orders")
    ]


def test_change_before_relation_is_an_error() -> None:
    """A change for an unknown relation OID is a SourceError, not a crash."""
    with pytest.raises(SourceError, match="before its Relation"):
        decode_all(BEGIN, b"I" + struct.pack(">I", 1) + b"N" + tuple_data(b"1"))
