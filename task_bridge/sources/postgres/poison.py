"""A row change the decoder cannot turn into an event, as a `Poison` item (issue #14 item 8).

One bad value (a jsonb nested deeper than Python's recursion limit, a loader that raises) or a
malformed Insert/Update/Delete message must cost that one change, not the stream: the decoder
catches the failure and hands this module the message. It reads the message again without
loaders, as far as its bytes allow, and keeps each column's server text (bounded) so the
operator sees what the row held; the change's position, table, key and the reason go with it.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from task_bridge.events import SourcePosition
from task_bridge.sources.base import Poison

RAW_VALUE_CHARS = 4096
"""Each column's text is kept up to this many characters (the rest is counted, not kept)."""
RAW_MESSAGE_BYTES = 64 * 1024
"""A message whose columns could not be read at all is kept as base64, up to this size."""

_OPS = {0x49: "insert", 0x55: "update", 0x44: "delete"}
_I32 = struct.Struct(">I")
_I16 = struct.Struct(">h")


class BadValue(Exception):
    """A column's loader raised: names the column and its type for the reason."""

    def __init__(self, column: str, type_name: str, cause: BaseException) -> None:
        super().__init__(f"column {column!r} ({type_name}): {type(cause).__name__}: {cause}")
        self.column = column


def poison_change(
    data: bytes,
    position: SourcePosition,
    exc: BaseException,
    names: tuple[str, ...] | None,
    key_names: tuple[str, ...],
    table: str | None,
) -> Poison:
    """The Poison for Insert/Update/Delete message `data` that raised `exc`.

    `names`: the relation's columns (None when the relation is unknown); `table`: its
    `schema.table`. The raw dict holds the op, the table, the key, the tuples as text and, when
    not even one column could be read, the message itself (base64, bounded)."""
    op = _OPS.get(data[0], chr(data[0])) if data else "?"
    reason = str(exc) if isinstance(exc, BadValue) else f"{type(exc).__name__}: {exc}"
    raw: dict[str, Any] = {"op": op, "table": table, "message_bytes": len(data)}
    tuples = _read_tuples(data, names) if names is not None else {}
    raw.update(tuples)
    row = tuples.get("after") or tuples.get("before") or {}
    key = {n: row[n] for n in key_names if n in row}
    raw["key"] = key
    if not any(tuples.values()):
        raw["message_b64"] = base64.b64encode(data[:RAW_MESSAGE_BYTES]).decode()
    return Poison(
        position,
        f"cannot decode this {op} of {table or 'an unknown relation'}: {reason}",
        raw,
        table=table,
        key=key,
    )


def _read_tuples(data: bytes, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`before`/`after` as column -> text (None for NULL, "(unchanged)" for a TOASTed value
    not sent), read as far as the bytes go; a tuple cut short ends with an `(unreadable)`
    entry."""
    out: dict[str, dict[str, Any]] = {}
    off = 5  # type byte + relation oid
    try:
        while off < len(data):
            tag = data[off]
            if tag == 0x4E:  # 'N' new tuple
                name = "after"
            elif tag in (0x4B, 0x4F):  # 'K' key / 'O' old tuple
                name = "before"
            else:
                break
            out[name] = {}
            off = _read_tuple(data, off + 1, names, out[name])
    except (IndexError, struct.error, ValueError):
        pass
    return out


def _read_tuple(data: bytes, off: int, names: tuple[str, ...], row: dict[str, Any]) -> int:
    ncols = _I16.unpack_from(data, off)[0]
    off += 2
    for i in range(ncols):
        name = names[i] if i < len(names) else f"column {i + 1}"
        row["(unreadable)"] = f"from byte {off}"  # replaced once this column is read
        kind = data[off]
        if kind in (0x74, 0x62):  # 't' text, 'b' binary
            length = _I32.unpack_from(data, off + 1)[0]
            value = data[off + 5 : off + 5 + length]
            if len(value) < length:
                raise ValueError("truncated value")
            row[name] = _bounded(value) if kind == 0x74 else "(binary)"
            off += 5 + length
        elif kind == 0x6E:  # 'n' NULL
            row[name] = None
            off += 1
        elif kind == 0x75:  # 'u' unchanged TOASTed value
            row[name] = "(unchanged)"
            off += 1
        else:
            raise ValueError(f"unknown tuple data kind {kind!r}")
        del row["(unreadable)"]
    return off


def _bounded(value: bytes) -> str:
    text = value.decode("utf-8", errors="replace")
    if len(text) <= RAW_VALUE_CHARS:
        return text
    return f"{text[:RAW_VALUE_CHARS]}... ({len(value)} bytes in all)"
