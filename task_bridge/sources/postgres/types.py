"""User-defined column types -> the built-in type whose loader decodes them.

pgoutput names a column's type by OID; a domain's OID is its own, which psycopg has no loader
for, so without this its values would reach rules as text. A domain (over a domain...) is
decoded as its base type, an array of a domain as an array of the base type. Enums and
composites have no base type and stay text (README, "Types").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg

from task_bridge.errors import SourceError, SourceUnavailable
from task_bridge.sources.postgres.pgoutput import BaseTypes
from task_bridge.sources.postgres.replication import CONNECT_TIMEOUT_S, describe

_DOMAINS = """
WITH RECURSIVE chain(start, oid, typtype, base) AS (
    SELECT t.oid, t.oid, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = ANY(%(oids)s)
  UNION ALL
    SELECT c.start, t.oid, t.typtype, t.typbasetype
    FROM chain c JOIN pg_type t ON t.oid = c.base
    WHERE c.typtype = 'd'
)
SELECT start, oid FROM chain WHERE typtype <> 'd' AND start <> oid
"""
_ARRAYS_OF_DOMAINS = """
SELECT a.oid, a.typelem FROM pg_type a JOIN pg_type e ON e.oid = a.typelem
WHERE a.oid = ANY(%(oids)s) AND a.typcategory = 'A' AND e.typtype = 'd'
"""
_ARRAY_OF = "SELECT oid, typarray FROM pg_type WHERE oid = ANY(%(oids)s) AND typarray <> 0"


def base_types(conn: psycopg.Connection, oids: Sequence[int]) -> dict[int, int]:
    """{OID: base OID} for the domains and arrays of domains among `oids`."""
    found = _pairs(conn, _DOMAINS, oids)
    elements = _pairs(conn, _ARRAYS_OF_DOMAINS, oids)
    if elements:
        element_bases = _pairs(conn, _DOMAINS, list(elements.values()))
        arrays = _pairs(conn, _ARRAY_OF, list(element_bases.values()))
        for array, element in elements.items():
            base_array = arrays.get(element_bases.get(element, 0))
            if base_array:
                found[array] = base_array
    return found


def _pairs(conn: psycopg.Connection, query: str, oids: Sequence[int]) -> dict[int, int]:
    rows = conn.execute(query, {"oids": list(oids)}).fetchall()
    return {int(a): int(b) for a, b in rows}


def base_types_at(dsn: str) -> BaseTypes:
    """A `BaseTypes` asking the server over a short connection (asked at most once per new
    type OID, when a Relation message names it)."""

    def resolve(oids: Sequence[int]) -> Mapping[int, int]:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                return base_types(conn, oids)
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
        except psycopg.Error as exc:
            raise SourceError(f"reading column types failed: {describe(exc)}") from exc

    return resolve
