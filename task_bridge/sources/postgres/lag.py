"""How far a replication slot's confirmed position trails the server's WAL (`slot.lag`)."""

from __future__ import annotations

import psycopg

from task_bridge.errors import SourceUnavailable
from task_bridge.sources.postgres.replication import describe


def slot_lag_bytes(dsn: str, slot: str) -> int | None:
    """Bytes of WAL the slot holds back, or None when the slot does not exist."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            ).fetchone()
    except psycopg.OperationalError as exc:
        raise SourceUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
    return None if row is None or row[0] is None else int(row[0])
