"""pgoutput (proto_version 1) decoding: XLogData payloads -> ChangeEvent / Commit.

Hand-written because no library decodes pgoutput over psycopg's `pq` layer. Byte layouts are in
`shared/reference/pgoutput.md` (PostgreSQL protocol docs, "Logical Replication Message Formats").
Values arrive in text format and are turned into Python values by psycopg's own loaders, chosen
by type OID; a domain is loaded as its base type (`types.py`); an OID psycopg does not know
(enums, composites) stays `str`.
The decoder is the hot path: offsets and `struct.unpack_from`, no intermediate copies.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import AdaptersMap
from psycopg.types.json import set_json_loads

from task_bridge.errors import SourceError
from task_bridge.events import UNCHANGED, ChangeEvent, Op, SourcePosition, format_lsn
from task_bridge.jsonenc import loads_payload
from task_bridge.sources.base import Commit, Poison
from task_bridge.sources.postgres.loaders import IntervalLoader
from task_bridge.sources.postgres.poison import BadValue, poison_change

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
Loader = Callable[[bytes], Any]
BaseTypes = Callable[[Sequence[int]], Mapping[int, int]]
"""OIDs -> {OID: the OID to decode it as}, for those that are domains or arrays of one
(`types.base_types_at`)."""

_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_I32 = struct.Struct(">I")
_I16 = struct.Struct(">h")
_COLUMN = struct.Struct(">Ii")


def pg_timestamp(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


# Types whose server text always loads (no 'infinity' or out-of-range forms): no wrapper.
# bool, int8, int2, int4, text, oid, float4, float8, varchar, numeric, uuid, json, jsonb
_NEVER_FAIL = frozenset({16, 20, 21, 23, 25, 26, 700, 701, 1043, 1700, 2950, 114, 3802})


def _text(data: bytes) -> str:
    return data.decode("utf-8")


class LoaderCache:
    """One psycopg text loader per type OID, created on first use.

    Loaders come from a private copy of psycopg's global adapters (register custom loaders on
    `adapters`). With no connection as context they assume what the replication session sets:
    UTC (timestamptz -> tz-aware datetimes), ISO dates, `postgres` interval style.
    """

    def __init__(
        self, adapters: AdaptersMap | None = None, base_types: BaseTypes | None = None
    ) -> None:
        """`base_types` names the built-in type to decode a domain (or an array of one) as;
        asked once per OID psycopg has no loader for."""
        self.adapters = adapters if adapters is not None else AdaptersMap(psycopg.adapters)
        set_json_loads(loads_payload, self.adapters)  # numbers beyond a float stay exact
        self.adapters.register_loader("interval", IntervalLoader)  # psycopg's C one wraps
        self.base_types = base_types
        self._loaders: dict[int, Loader] = {}
        self._base: dict[int, int] = {}
        self._asked: set[int] = set()

    def learn(self, oids: Sequence[int]) -> None:
        """Before loading `oids`: ask `base_types` about those psycopg does not know."""
        unknown = {
            oid
            for oid in oids
            if oid not in self._asked and self.adapters.get_loader(oid, pq.Format.TEXT) is None
        }
        if unknown and self.base_types is not None:
            self._base.update(self.base_types(sorted(unknown)))
            self._asked |= unknown

    def get(self, oid: int) -> Loader:
        loader = self._loaders.get(oid)
        if loader is None:
            oid, own_oid = self._base.get(oid, oid), oid
            cls = self.adapters.get_loader(oid, pq.Format.TEXT)
            if cls is None:
                loader = _text
            elif oid in _NEVER_FAIL:
                loader = cls(oid, self.adapters).load
            else:
                loader = _lenient(cls(oid, self.adapters).load)
            self._loaders[own_oid] = loader
        return loader


def _lenient(load: Loader) -> Loader:
    """A loader that keeps the text of values Python cannot hold ('infinity', BC dates)."""

    def lenient_load(data: bytes) -> Any:
        try:
            return load(data)
        except psycopg.DataError:
            return data.decode("utf-8")

    return lenient_load


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    table: str
    replident: str
    names: tuple[str, ...]
    type_oids: tuple[int, ...]
    key_flags: tuple[bool, ...]
    loaders: tuple[Loader, ...]
    ident_names: tuple[str, ...]
    """Replica identity columns (flag 1): what a 'K' old tuple carries."""
    key_names: tuple[str, ...]
    """`ChangeEvent.key`: the primary key when known, else the replica identity."""


def _cstring(data: bytes, off: int) -> tuple[str, int]:
    end = data.index(0, off)
    return data[off:end].decode("utf-8"), end + 1


class PgOutputDecoder:
    """Stateful decoder: keeps the relation cache and the current transaction.

    `primary_keys` maps relation OID -> primary-key column names; when known it defines
    `ChangeEvent.key` (with REPLICA IDENTITY FULL every column is flagged as identity).
    """

    def __init__(
        self,
        primary_keys: Mapping[int, tuple[str, ...]] | None = None,
        adapters: AdaptersMap | None = None,
        base_types: BaseTypes | None = None,
    ) -> None:
        self.loaders = LoaderCache(adapters, base_types)
        self.relations: dict[int, Relation] = {}
        self.primary_keys = dict(primary_keys or {})
        self.in_transaction = False
        self._lsn = 0
        self._index = 0
        self._commit_time: datetime | None = None
        self._xid: int | None = None

    def decode(self, data: bytes) -> list[ChangeEvent | Commit | Poison]:
        """One pgoutput message -> zero or more items (Truncate gives one per relation).

        An Insert, Update or Delete that does not decode (a value no loader takes, a value
        nested too deep, a malformed tuple) becomes one `Poison` at the position the event
        would have had, and decoding goes on. Any other message that does not decode raises
        `SourceError` naming its kind and size: without it the stream cannot be followed."""
        change = _ROW_CHANGES.get(data[0]) if data else None
        if change is not None:
            try:
                return [change(self, data)]
            except Exception as exc:  # one change, not the stream (issue #14 item 8)
                return [self._poison(data, exc)]
        try:
            return self._decode(data)
        except SourceError:
            raise
        except (struct.error, IndexError, ValueError, KeyError, OverflowError) as exc:
            what = repr(chr(data[0])) if data else "an empty"
            raise SourceError(
                f"pgoutput: cannot decode {what} message of {len(data)} bytes:"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    def _poison(self, data: bytes, exc: Exception) -> Poison:
        rel = self.relations.get(_I32.unpack_from(data, 1)[0]) if len(data) >= 5 else None
        position = SourcePosition(kind="postgres", lsn=self._lsn, index=self._index)
        self._index += 1
        return poison_change(
            data,
            position,
            exc,
            rel.names if rel else None,
            rel.key_names if rel else (),
            f"{rel.schema}.{rel.table}" if rel else None,
        )

    def _decode(self, data: bytes) -> list[ChangeEvent | Commit | Poison]:
        kind = data[0]
        if kind == 0x42:  # 'B'
            self._lsn, ts, self._xid = _BEGIN.unpack_from(data, 1)
            self._commit_time = pg_timestamp(ts)
            self._index = 0
            self.in_transaction = True
            return []
        if kind == 0x43:  # 'C'
            _flags, _commit_lsn, end_lsn, _ts = _COMMIT.unpack_from(data, 1)
            self.in_transaction = False
            return [Commit(format_lsn(end_lsn))]
        if kind == 0x52:  # 'R'
            self._relation(data)
            return []
        if kind == 0x54:  # 'T'
            return self._truncate(data)
        # 'Y' type, 'O' origin, 'M' message and anything newer: nothing for rules
        return []

    # -- messages ------------------------------------------------------------------------------

    def _relation(self, data: bytes) -> None:
        oid = _I32.unpack_from(data, 1)[0]
        schema, off = _cstring(data, 5)
        table, off = _cstring(data, off)
        replident = chr(data[off])
        ncols = _I16.unpack_from(data, off + 1)[0]
        off += 3
        names, oids, flags = [], [], []
        for _ in range(ncols):
            flag = data[off]
            name, off = _cstring(data, off + 1)
            type_oid, _typmod = _COLUMN.unpack_from(data, off)
            off += 8
            names.append(name)
            oids.append(type_oid)
            flags.append(bool(flag & 1))
        ident = tuple(n for n, k in zip(names, flags, strict=True) if k)
        self.loaders.learn(oids)
        self.relations[oid] = Relation(
            oid,
            schema or "pg_catalog",
            table,
            replident,
            tuple(names),
            tuple(oids),
            tuple(flags),
            tuple(self.loaders.get(t) for t in oids),
            ident,
            self.primary_keys.get(oid, ident),
        )

    def _rel(self, data: bytes, off: int) -> Relation:
        oid = _I32.unpack_from(data, off)[0]
        rel = self.relations.get(oid)
        if rel is None:
            raise SourceError(f"pgoutput: change for relation {oid} before its Relation message")
        return rel

    def _tuple(self, data: bytes, off: int, rel: Relation) -> tuple[dict[str, Any], int]:
        ncols = _I16.unpack_from(data, off)[0]
        off += 2
        names, loaders = rel.names, rel.loaders
        row: dict[str, Any] = {}
        for i in range(ncols):
            kind = data[off]
            off += 1
            if kind == 0x74:  # 't' text value
                length = _I32.unpack_from(data, off)[0]
                off += 4
                try:
                    row[names[i]] = loaders[i](data[off : off + length])
                except Exception as exc:
                    raise BadValue(names[i], self._type_name(rel.type_oids[i]), exc) from exc
                off += length
            elif kind == 0x6E:  # 'n' NULL
                row[names[i]] = None
            elif kind == 0x75:  # 'u' unchanged TOASTed value, not sent
                row[names[i]] = UNCHANGED
            elif kind == 0x62:  # 'b' binary: never requested
                raise SourceError("pgoutput: binary tuple data was not requested")
            else:
                raise SourceError(f"pgoutput: unknown tuple data kind {kind!r}")
        if off > len(data):  # a slice past the end does not raise: a value was cut short
            raise SourceError(f"pgoutput: tuple data ends at byte {len(data)}, before {off}")
        return row, off

    def _type_name(self, oid: int) -> str:
        info = self.loaders.adapters.types.get(oid)
        return info.name if info is not None else f"type oid {oid}"

    @staticmethod
    def _key(rel: Relation, row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None:
            return {}
        return {n: row.get(n) for n in rel.key_names}

    @staticmethod
    def _only_key(rel: Relation, row: dict[str, Any]) -> dict[str, Any]:
        return {n: row[n] for n in rel.ident_names if n in row}

    def _event(
        self, op: Op, rel: Relation, after: dict[str, Any] | None, before: dict[str, Any] | None
    ) -> ChangeEvent:
        event = ChangeEvent(
            op=op,
            schema=rel.schema,
            table=rel.table,
            position=SourcePosition(kind="postgres", lsn=self._lsn, index=self._index),
            after=after,
            before=before,
            key=self._key(rel, after if after is not None else before),
            commit_time=self._commit_time,
            txid=self._xid,
        )
        self._index += 1
        return event

    def _insert(self, data: bytes) -> ChangeEvent:
        rel = self._rel(data, 1)
        after, _ = self._tuple(data, 6, rel)  # 1 + 4 (oid) + 1 ('N')
        return self._event("insert", rel, after, None)

    def _update(self, data: bytes) -> ChangeEvent:
        rel = self._rel(data, 1)
        off = 5
        before: dict[str, Any] | None = None
        tag = data[off]
        if tag in (0x4B, 0x4F):  # 'K' key / 'O' old tuple
            before, off = self._tuple(data, off + 1, rel)
            if tag == 0x4B:
                before = self._only_key(rel, before)
            tag = data[off]
        after, _ = self._tuple(data, off + 1, rel)
        return self._event("update", rel, after, before)

    def _delete(self, data: bytes) -> ChangeEvent:
        rel = self._rel(data, 1)
        tag = data[5]
        before, _ = self._tuple(data, 6, rel)
        if tag == 0x4B:
            before = self._only_key(rel, before)
        return self._event("delete", rel, None, before)

    def _truncate(self, data: bytes) -> list[ChangeEvent | Commit | Poison]:
        nrels = _I32.unpack_from(data, 1)[0]
        off = 6  # 1 + 4 (count) + 1 (option bits)
        out: list[ChangeEvent | Commit | Poison] = []
        for _ in range(nrels):
            rel = self._rel(data, off)
            off += 4
            out.append(self._event("truncate", rel, None, None))
        return out


_ROW_CHANGES: dict[int, Callable[[PgOutputDecoder, bytes], ChangeEvent]] = {
    0x49: PgOutputDecoder._insert,  # 'I'
    0x55: PgOutputDecoder._update,  # 'U'
    0x44: PgOutputDecoder._delete,  # 'D'
}
