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
SCHEMA_PUBLICATION_MIN = 150000
"""`FOR TABLES IN SCHEMA` and `pg_publication_namespace` exist from Postgres 15; on 14 the bridge
publishes a schema's current tables instead (see `resolve_tables`)."""
VIA_ROOT = "publish_via_partition_root"
GENCOLS = "publish_generated_columns"
GENERATED_COLUMNS_MIN = 180000
"""From 18 pgoutput can send stored generated columns; the bridge's publication asks it to.
Without it, 18 refuses the application's UPDATE/DELETE on a table whose REPLICA IDENTITY FULL
holds a generated column ("Replica identity must not contain unpublished generated
columns")."""

_RELATIONS = (
    "SELECT n.nspname || '.' || c.relname, c.relispartition,"
    " CASE WHEN c.relispartition THEN"
    " (SELECT rn.nspname || '.' || r.relname FROM pg_class r"
    " JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE r.oid = pg_partition_root(c.oid))"
    " END"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
)


def relations(conn: psycopg.Connection) -> dict[str, str | None]:
    """Qualified table -> the root of its partition tree (None: not a partition).

    Publications publish via the partition root, so a partition's changes arrive under its
    root's name; a partition is never a table of its own for the rules.
    """
    return {
        name: root if is_partition else None
        for name, is_partition, root in conn.execute(_RELATIONS)
    }


def partition_error(pattern: str, root: str) -> str:
    """Why a rule must not name a partition, and what to name instead."""
    return (
        f"table '{pattern}' is a partition of '{root}': its changes are published"
        f" under '{root}' (publish_via_partition_root); name '{root}' in the rule (a `when:`"
        " on the partition key selects this partition's rows)"
    )


def whole_schemas(patterns: Sequence[str]) -> list[str]:
    """The schemas that patterns name whole (`schema.*`)."""
    return sorted(
        {
            schema
            for schema, _, table in (p.partition(".") for p in patterns)
            if table == "*" and not GLOB_CHARS & set(schema)
        }
    )


def resolve_tables(conn: psycopg.Connection, patterns: Sequence[str]) -> tuple[set[str], set[str]]:
    """Patterns -> (qualified tables, whole schemas). `schema.*` publishes the whole schema.

    Globs never match partitions (their rows arrive under the partitioned table's name); a
    pattern naming a partition is a `SourceError`. Before Postgres 15 (no `TABLES IN SCHEMA`)
    a whole schema becomes the tables it holds now (no partitions).
    """
    tables: set[str] = set()
    schemas: set[str] = set()
    catalog = relations(conn)
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
            matched = {n: r for n, r in catalog.items() if fnmatch.fnmatchcase(n, pattern)}
            found = {n for n, root in matched.items() if root is None}
            if matched and not found:
                roots = sorted({r for r in matched.values() if r is not None})
                raise SourceError(
                    f"rules name tables '{pattern}', which match only partitions (of"
                    f" {', '.join(roots)}): their changes are published under the partitioned"
                    " table's name; name that table in the rule"
                )
            tables.update(found)
        else:
            if pattern not in catalog:
                raise SourceError(f"rules name table '{pattern}', which does not exist")
            if (root := catalog[pattern]) is not None:
                raise SourceError(partition_error(pattern, root))
            tables.add(pattern)
    if conn.info.server_version < SCHEMA_PUBLICATION_MIN:
        tables.update(
            name
            for name, root in catalog.items()
            if root is None and name.partition(".")[0] in schemas
        )
        schemas = set()
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
    if conn.info.server_version < SCHEMA_PUBLICATION_MIN:
        return tables, set()
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

    The publication publishes via the partition root (an existing one without the setting gets
    it), so a partitioned table's rows carry its own name whichever partition holds them.
    Never drops it: dropping would make it younger than the slot, whose historic snapshot then
    cannot see it. When the patterns name no table (rules only for polled queues, or globs that
    match nothing) an existing publication keeps its tables (`kept`) and a missing one is
    created empty. A publication `FOR ALL TABLES` (made by an operator) is left alone; one
    without the partition-root setting is refused when a rule names a partitioned table.
    """
    tables, schemas = resolve_tables(conn, patterns)
    gencols = conn.info.server_version >= GENERATED_COLUMNS_MIN
    exists = conn.execute(
        "SELECT puballtables, pubviaroot, "
        + ("pubgencols = 's'" if gencols else "true")
        + " FROM pg_publication WHERE pubname = %s",
        (publication,),
    ).fetchone()
    name = sql.Identifier(publication)
    options = [sql.SQL("{} = true").format(sql.Identifier(VIA_ROOT))]
    if gencols:
        options.append(sql.SQL("{} = stored").format(sql.Identifier(GENCOLS)))
    via_root = sql.SQL("WITH ({})").format(sql.SQL(", ").join(options))
    if exists is None:
        if tables or schemas:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR {} {}").format(
                    name, _objects(tables, schemas), via_root
                )
            )
        else:
            conn.execute(sql.SQL("CREATE PUBLICATION {} {}").format(name, via_root))
        return "created"
    all_tables, is_via_root, has_gencols = exists
    if all_tables:
        if not is_via_root:
            _refuse_all_tables_by_partition(conn, publication, tables)
        return "unchanged"
    change: PublicationChange = "unchanged"
    if not is_via_root or not has_gencols:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} SET ({})").format(name, sql.SQL(", ").join(options))
        )
        change = "altered"
    if _published(conn, publication) == (tables, schemas):
        return change
    if not tables and not schemas:
        return "kept" if change == "unchanged" else change  # ALTER ... SET needs an object
    conn.execute(sql.SQL("ALTER PUBLICATION {} SET {}").format(name, _objects(tables, schemas)))
    return "altered"


def _refuse_all_tables_by_partition(
    conn: psycopg.Connection, publication: str, tables: set[str]
) -> None:
    partitioned = sorted(
        f"{s}.{t}"
        for s, t in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p'"
        )
        if f"{s}.{t}" in tables
    )
    if partitioned:
        raise SourceError(
            f"publication '{publication}' (FOR ALL TABLES, not made by the bridge) publishes"
            f" partitioned table(s) {', '.join(partitioned)} under their partitions' names, so"
            f" rules on them would never fire; run: ALTER PUBLICATION"
            f" {sql.Identifier(publication).as_string(conn)} SET ({VIA_ROOT} = true)"
        )


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
