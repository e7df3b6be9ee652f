"""Fixtures for end-to-end tests: a fresh database, the fake Fragment API, a bridge process."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from task_bridge.fakes.fragment import FakeFragment
from task_bridge.outbox.postgres import parse_url
from tests.support.bridge_proc import BridgeProcess

TOKEN = "s3cr3t-fragment-token"

ORDERS_DDL = """
CREATE TABLE public.orders (
    id          bigint PRIMARY KEY,
    status      text NOT NULL,
    amount      numeric(12, 2),
    created_at  timestamptz,
    customer    text,
    tags        text[],
    meta        jsonb,
    ref         uuid,
    note        text
);
ALTER TABLE public.orders REPLICA IDENTITY FULL;
"""

ORDER_RULES = """
rules:
  - name: review
    table: public.orders
    on: [insert, update]
    when: after.status == 'paid'
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task:
          due_at: "{{ after.created_at + timedelta(hours=24) }}"
          fields:
            title: "Review order #{{ after.id }}"
            amount: "{{ after.amount }}"
            created_at: "{{ after.created_at }}"
            customer: "{{ after.customer }}"
            tags: "{{ after.tags }}"
            meta: "{{ after.meta }}"
            ref: "{{ after.ref }}"
            note: "{{ after.note }}"
  - name: close
    table: public.orders
    on: [update, delete]
    when: op == 'delete' or after.status == 'shipped'
    actions:
      - {op: close, target: fragment, uid: "order-{{ row.id }}"}
"""


@dataclass
class BridgeEnv:
    """One test's world: database, fake API, work dir with bridge.yaml and rules."""

    dsn: str
    fake: FakeFragment
    workdir: Path
    slot: str = "test_bridge"
    processes: list[BridgeProcess] = field(default_factory=list)
    outbox_url: str | None = None
    """A Postgres outbox (shared by siblings); None: `outbox.db` in the work dir."""

    @property
    def config_path(self) -> Path:
        return self.workdir / "bridge.yaml"

    def write_config(
        self,
        rules: str = ORDER_RULES,
        concurrency: int = 16,
        target: str = "",
        source: str = "",
        retry: str = "max_attempts: 50",
        extra_targets: str = "",
        kafka: str | None = None,
        status_interval: str = "500ms",
    ) -> Path:
        """bridge.yaml for this world; `extra_targets` is YAML of more targets (by name);
        `kafka` (YAML of a `source.kafka` block) replaces the Postgres source."""
        (self.workdir / "rules").mkdir(exist_ok=True)
        (self.workdir / "rules" / "rules.yaml").write_text(textwrap.dedent(rules))
        self.config_path.write_text(
            f"""source:
{self._source(source, kafka, status_interval)}
outbox:
  url: "{self.outbox_url or "sqlite:///outbox.db"}"
delivery:
  concurrency: {concurrency}
  timeout: 2s
  shutdown_grace: 10s
  retry: {{initial_backoff: 50ms, max_backoff: 1s, {retry}}}
targets:
  fragment:
    kind: fragment
    base_url: {self.fake.url}
    token: ${{FRAGMENT_TOKEN}}
{textwrap.indent(textwrap.dedent(target), "    ")}
{textwrap.indent(textwrap.dedent(extra_targets), "  ")}
rules: rules/
"""
        )
        return self.config_path

    def _source(self, extra: str, kafka: str | None, status_interval: str) -> str:
        if kafka is not None:
            return "  kafka:\n" + textwrap.indent(textwrap.dedent(kafka).strip("\n"), "    ")
        return f"""  postgres:
    dsn: "{self.dsn}"
    slot: {self.slot}
    publication: {self.slot}
    status_interval: {status_interval}
{textwrap.indent(textwrap.dedent(extra), "    ")}"""

    def sibling(self, name: str) -> BridgeEnv:
        """Another bridge's world (its own work dir; its own outbox unless this one is in
        Postgres) sharing this database, fake and process list (so this fixture stops its
        processes too)."""
        workdir = self.workdir / name
        workdir.mkdir()
        return BridgeEnv(self.dsn, self.fake, workdir, self.slot, self.processes, self.outbox_url)

    def bridge(self) -> BridgeProcess:
        if not self.config_path.exists():
            self.write_config()
        proc = BridgeProcess(self.config_path, self.workdir / "bridge.log")
        self.processes.append(proc)
        return proc

    def sql(self, *statements: str, params: Any = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement, params)

    def query(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def outbox_rows(self, where: str = "1=1") -> list[dict[str, Any]]:
        if self.outbox_url is not None:
            return self._pg_outbox(f"SELECT * FROM ops WHERE {where} ORDER BY seq")
        path = self.workdir / "outbox.db"
        if not path.exists():
            return []
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(f"SELECT * FROM ops WHERE {where} ORDER BY seq")]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def outbox_count(self, where: str = "1=1") -> int:
        if self.outbox_url is not None:
            rows = self._pg_outbox(f"SELECT count(*) AS n FROM ops WHERE {where}")
            return int(rows[0]["n"]) if rows else 0
        path = self.workdir / "outbox.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(path, timeout=30)
        try:
            return int(conn.execute(f"SELECT count(*) FROM ops WHERE {where}").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def _pg_outbox(self, statement: str) -> list[dict[str, Any]]:
        """Rows of a query on the Postgres outbox; none while its tables do not exist yet."""
        assert self.outbox_url is not None
        dsn, schema = parse_url(self.outbox_url)
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            try:
                return conn.execute(statement).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def confirmed_flush_lsn(self) -> int | None:
        rows = self.query(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (self.slot,),
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None


@pytest.fixture
def fake_fragment() -> Iterator[FakeFragment]:
    with FakeFragment(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def bridge_env(
    pg_dsn: str, fake_fragment: FakeFragment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BridgeEnv]:
    monkeypatch.setenv("FRAGMENT_TOKEN", TOKEN)
    env = BridgeEnv(dsn=pg_dsn, fake=fake_fragment, workdir=tmp_path)
    env.sql(ORDERS_DDL)
    try:
        yield env
    finally:
        for proc in env.processes:
            proc.stop()
        # drop the slot so the throwaway cluster does not retain WAL for it
        env.sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            params=(env.slot,),
        )
