"""Publication and replication-slot management (plain SQL over a normal connection).

The publication is created before the slot: pgoutput reads the publication through the slot's
historic catalog snapshot, so a publication younger than the slot's start would not be seen.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal

import psycopg
from psycopg import sql

from task_bridge.errors import SourceError

GLOB_CHARS = frozenset("*?[")


def resolve_tables(conn: psycopg.Connection, patterns: Sequence[str]) -> tuple[set[str], set[str]]:
    """Patterns -> (qualified tables, whole schemas). `schema.*` publishes the whole schema."""
    tables: set[str] = set()
    schemas: set[str] = set()
    catalog: list[str] | None = None
    for pattern in patterns:
        schema, _, table = pattern.partition(".")
        if table == "*" and not GLOB_CHARS & set(schema):
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            if not exists:
                raise SourceError(f"rules name schema '{schema}', which does not exist")
            schemas.add(schema)
        elif GLOB_CHARS & set(pattern):
            if catalog is None:
                catalog = [
                    f"{s}.{t}"
                    for s, t in conn.execute(
                        "SELECT schemaname, tablename FROM pg_tables"
                        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                    )
                ]
            tables.update(name for name in catalog if fnmatch.fnmatchcase(name, pattern))
        else:
            row = conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (schema, table),
            ).fetchone()
            if row is None:
                raise SourceError(f"rules name table '{pattern}', which does not exist")
            tables.add(pattern)
    return {t for t in tables if t.partition(".")[0] not in schemas}, schemas


def _published(conn: psycopg.Connection, publication: str) -> tuple[set[str], set[str]]:
    tables = {
        f"{s}.{t}"
        for s, t in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_publication p"
            " JOIN pg_publication_rel pr ON pr.prpubid = p.oid"
            " JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE p.pubname = %s",
            (publication,),
        )
    }
    schemas = {
        s
        for (s,) in conn.execute(
            "SELECT n.nspname FROM pg_publication p"
            " JOIN pg_publication_namespace pn ON pn.pnpubid = p.oid"
            " JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = %s",
            (publication,),
        )
    }
    return tables, schemas


def _objects(tables: set[str], schemas: set[str]) -> sql.Composable:
    parts: list[sql.Composable] = []
    if tables:
        parts.append(
            sql.SQL("TABLE ")
            + sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in sorted(tables))
        )
    if schemas:
        parts.append(
            sql.SQL("TABLES IN SCHEMA ")
            + sql.SQL(", ").join(sql.Identifier(s) for s in sorted(schemas))
        )
    return sql.SQL(", ").join(parts)


PublicationChange = Literal["created", "altered", "unchanged", "kept"]
"""What `ensure_publication` did; `kept`: no table named, the existing publication untouched."""


def ensure_publication(
    conn: psycopg.Connection, publication: str, patterns: Sequence[str]
) -> PublicationChange:
    """Create the publication for the rules' tables, or bring it in line.

    Never drops it: dropping would make it younger than the slot, whose historic snapshot then
    cannot see it. When the patterns name no table (rules only for polled queues, or globs that
    match nothing) an existing publication keeps its tables (`kept`) and a missing one is
    created empty. A publication `FOR ALL TABLES` (made by an operator) is left alone.
    """
    tables, schemas = resolve_tables(conn, patterns)
    exists = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    name = sql.Identifier(publication)
    if exists is None:
        if tables or schemas:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR {}").format(name, _objects(tables, schemas))
            )
        else:
            conn.execute(sql.SQL("CREATE PUBLICATION {}").format(name))
        return "created"
    if exists[0]:
        return "unchanged"
    published = _published(conn, publication)
    if published == (tables, schemas):
        return "unchanged"
    if not tables and not schemas:
        return "kept"  # ALTER ... SET needs at least one object; dropping is not an option
    conn.execute(sql.SQL("ALTER PUBLICATION {} SET {}").format(name, _objects(tables, schemas)))
    return "altered"


def published_objects(conn: psycopg.Connection, publication: str) -> list[str]:
    """The publication's tables and whole schemas (`schema.*`), sorted, for log lines."""
    tables, schemas = _published(conn, publication)
    return sorted(tables | {f"{s}.*" for s in schemas})


def ensure_slot(conn: psycopg.Connection, slot: str) -> tuple[bool, int]:
    """Create the logical slot (pgoutput) if missing.

    Returns (created, confirmed_flush_lsn). A slot of that name in another database or with
    another plugin is a `SourceError`: slot names are cluster-wide.
    """
    row = conn.execute(
        "SELECT plugin, slot_type, database, current_database(),"
        " (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is not None:
        plugin, slot_type, database, current, confirmed = row
        if plugin != "pgoutput":
            kind = plugin or slot_type
            raise SourceError(f"replication slot '{slot}' has plugin {kind!r}, not pgoutput")
        if database != current:
            raise SourceError(
                f"replication slot '{slot}' belongs to database '{database}', not '{current}'"
            )
        return False, int(confirmed or 0)
    lsn = conn.execute(
        "SELECT (lsn - '0/0'::pg_lsn)::bigint"
        " FROM pg_create_logical_replication_slot(%s, 'pgoutput')",
        (slot,),
    ).fetchone()
    return True, int(lsn[0]) if lsn else 0


def primary_keys(conn: psycopg.Connection, publication: str) -> dict[int, tuple[str, ...]]:
    """Relation OID -> primary-key columns, for every table in the publication."""
    rows = conn.execute(
        "SELECT c.oid, array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))"
        " FROM pg_publication_tables pt"
        " JOIN pg_namespace n ON n.nspname = pt.schemaname"
        " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename"
        " JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)"
        " WHERE pt.pubname = %s GROUP BY c.oid",
        (publication,),
    ).fetchall()
    return {int(oid): tuple(cols) for oid, cols in rows}
