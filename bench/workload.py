"""Bench workloads and the throwaway world they run in."""

from __future__ import annotations

import psycopg

from task_bridge.events import parse_lsn

DDL = """
CREATE TABLE IF NOT EXISTS bench (
    id          bigint PRIMARY KEY,
    status      text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    created_at  timestamptz NOT NULL,
    note        text
);
"""

TYPICAL_RULE = """
rules:
  - name: typical
    table: public.bench
    on: [insert, update]
    when: after.status != 'ignored'
    actions:
      - op: upsert
        target: fragment
        uid: "bench-{{ after.id }}"
        task:
          due_at: "{{ after.created_at + timedelta(hours=24) }}"
          fields:
            title: "Bench row {{ after.id }}"
            amount: "{{ after.amount }}"
            status: "{{ after.status }}"
"""

REJECT_RULE = TYPICAL_RULE.replace("after.status != 'ignored'", "after.status == 'never'")


def current_lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def write_changes(dsn: str, changes: int, batch: int = 10_000) -> int:
    """`changes` row changes: half inserts, half updates, in transactions of `batch` rows.
    Returns the WAL position after the last commit."""
    inserts = changes // 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("TRUNCATE bench")
        for start in range(1, inserts + 1, batch):
            end = min(inserts, start + batch - 1)
            conn.execute(
                "INSERT INTO bench SELECT g, 'new', g / 100.0,"
                " '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 second',"
                " 'row ' || g FROM generate_series(%s::bigint, %s::bigint) g",
                (start, end),
            )
        for start in range(1, changes - inserts + 1, batch):
            end = min(changes - inserts, start + batch - 1)
            conn.execute(
                "UPDATE bench SET status = 'paid', amount = amount + 1 WHERE id BETWEEN %s AND %s",
                (start, end),
            )
    return current_lsn(dsn)
