"""Parity of the two sources: row changes read from a real pgoutput slot, and the same changes
as Debezium records through a real Kafka-protocol broker, give equal `ChangeEvent`s (position
aside) and so the same operations. With `schemas.enable=true`, or without a schema but with the
columns' types declared (`kafka.column_types`), every value is equal; with neither, the values
JSON cannot type stay in their raw forms (README, "Kafka"), which a rule that renders them as
text does not notice."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from kafka import KafkaProducer

from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.jsonenc import dumps_payload
from task_bridge.operations import Operation
from task_bridge.rules import RuleEngine, load_rules
from task_bridge.sources.base import SourceItem
from task_bridge.sources.config import KafkaSourceConfig
from task_bridge.sources.kafka import KafkaSource
from task_bridge.sources.postgres.source import PostgresSource
from task_bridge.testing.kafka import KafkaBroker
from task_bridge.yamlsrc import load_yaml_text
from tests.integration.conftest import ORDER_RULES, ORDERS_DDL
from tests.support.debezium import encode
from tests.support.wait import wait_until

TYPES = {
    "id": "bigint",
    "status": "text",
    "amount": "numeric(12,2)",
    "created_at": "timestamptz",
    "customer": "text",
    "tags": "text[]",
    "meta": "jsonb",
    "ref": "uuid",
    "note": "text",
}
BIG_NOTE = "".join(f"{i:06x}-{(i * 7919) % 65521:04x};" for i in range(2000))  # toasted

CHANGES = (
    "INSERT INTO orders VALUES (1, 'paid', 12.50, '2026-01-01 10:00:00.123456+02', 'Ada',"
    " '{a,\"b c\"}', '{\"k\": [1, 2.5, null]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
    f" '{BIG_NOTE}')",
    "INSERT INTO orders (id, status) VALUES (2, 'paid')",  # NULLs
    "UPDATE orders SET status = 'shipped' WHERE id = 1",  # the toasted note is unchanged
    "UPDATE orders SET amount = -0.07, meta = '[]', tags = '{}', ref = NULL WHERE id = 1",
    "UPDATE orders SET amount = 123456789.99, customer = 'Bob' WHERE id = 2",
    "DELETE FROM orders WHERE id = 2",
)

TEXT_RULES = """
rules:
  - name: mirror
    table: public.orders
    on: [insert, update, delete]
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ row.id }}"
        task:
          fields:
            op: "{{ op }}"
            status: "{{ row.status }}"
            amount: "{{ row.amount }}"
            customer: "{{ row.customer }}"
            tags: "{{ row.tags }}"
            ref: "{{ row.ref }}"
            key: "{{ key.id }}"
"""


class _Target:
    supported_ops = frozenset({"upsert", "update", "close"})
    unsupported_note = ""

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        return []


def _engine(text: str) -> RuleEngine:
    doc = load_yaml_text(text, "rules.yaml")
    return RuleEngine(
        load_rules(
            doc.data["rules"],
            base_dir=Path("."),
            config_file="rules.yaml",
            config_doc=doc,
            targets={"fragment": _Target()},
        )
    )


def _collect(read: Callable[[], list[SourceItem]], count: int) -> list[ChangeEvent]:
    """Read until `count` change events came (deadline, no sleeps)."""
    events: list[ChangeEvent] = []
    deadline = time.monotonic() + 60
    while len(events) < count:
        assert time.monotonic() < deadline, f"only {len(events)} of {count} events"
        events.extend(item for item in read() if isinstance(item, ChangeEvent))
    return events


_NOWHERE = SourcePosition(kind="-")


def _positionless(event: ChangeEvent) -> ChangeEvent:
    """The event with its position replaced: the sources differ only in where events come from."""
    return dataclasses.replace(event, position=_NOWHERE)


def _ops(engine: RuleEngine, events: list[ChangeEvent]) -> list[tuple[Any, ...]]:
    """The operations as they would go out: the payload as the JSON sent to the API."""

    def shape(op: Operation) -> tuple[Any, ...]:
        payload = dumps_payload(op.payload)
        return (op.target, op.op, op.uid, op.rule, op.action_index, payload, op.error)

    return [shape(op) for event in events for op in engine.evaluate(event)]


@pytest.fixture
def pg_events(pg_dsn: str) -> list[ChangeEvent]:
    """The changes as the Postgres source reads them from a pgoutput slot."""
    source = PostgresSource(pg_dsn, "parity", "parity", ["public.orders"], 1.0)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(ORDERS_DDL)
        source.open(None)
        try:
            for statement in CHANGES:
                conn.execute(statement)
            events = _collect(lambda: source.read(100, 0.5), len(CHANGES))
        finally:
            source.close()
            # the walsender may take a moment to exit after the close (on a busy machine)
            wait_until(
                lambda: (
                    not conn.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = 'parity'"
                    ).fetchone()[0]
                ),
                message="the slot to be released",
            )
            conn.execute("SELECT pg_drop_replication_slot('parity')")
    return events


def _through_kafka(
    broker: KafkaBroker,
    events: list[ChangeEvent],
    *,
    with_schema: bool,
    column_types: dict[str, dict[str, str]] | None = None,
) -> list[ChangeEvent]:
    """Each event as its Debezium record, produced to the broker and read by the Kafka source."""
    topic = broker.create_topic(partitions=1, name=f"app.public.orders.{time.monotonic_ns()}")
    with KafkaProducer(bootstrap_servers=broker.bootstrap) as producer:
        for event in events:
            key, value = encode(event, TYPES, with_schema=with_schema)
            producer.send(topic, key=key, value=value)
        producer.flush()
    config = KafkaSourceConfig(
        bootstrap_servers=broker.bootstrap,
        topics=[topic],
        group_id=f"parity-{topic}",
        column_types=column_types or {},
    )
    source = KafkaSource(config, logging.getLogger("test"))
    source.open(None)
    try:
        return _collect(lambda: source.read(100, 0.5), len(events))
    finally:
        source.close()


@pytest.mark.parametrize("typed_by", ["schema", "column_types"])
def test_debezium_gives_the_events_and_operations_of_pgoutput(
    pg_events: list[ChangeEvent], kafka_broker: KafkaBroker, typed_by: str
) -> None:
    """With `schemas.enable=true`, or schemaless with the columns' types declared in
    `kafka.column_types`, every value is equal."""
    if typed_by == "schema":
        kafka_events = _through_kafka(kafka_broker, pg_events, with_schema=True)
    else:
        declared = {"public.orders": TYPES}
        kafka_events = _through_kafka(
            kafka_broker, pg_events, with_schema=False, column_types=declared
        )
    assert [e.position.kind for e in kafka_events] == ["kafka"] * len(pg_events)
    # what the changes hold, so that equality below means something
    first, _, shipped, changed, _, deleted = pg_events
    assert first.after is not None and shipped.after is not None and changed.after is not None
    assert first.after["amount"] == Decimal("12.50")
    assert isinstance(first.after["created_at"], datetime)
    assert first.after["meta"] == {"k": [1, 2.5, None]}
    assert isinstance(first.after["ref"], UUID) and first.after["tags"] == ["a", "b c"]
    assert shipped.after["note"] is UNCHANGED and changed.after["amount"] == Decimal("-0.07")
    assert deleted.op == "delete" and deleted.key == {"id": 2}
    for pg, kafka in zip(pg_events, kafka_events, strict=True):
        assert _positionless(kafka) == _positionless(pg)
    for rules in (ORDER_RULES, TEXT_RULES):
        engine = _engine(rules)
        assert _ops(engine, kafka_events) == _ops(engine, pg_events)
        assert _ops(engine, pg_events), "the rules act on these changes"


def test_debezium_without_schema_or_types_keeps_raw_forms_and_renders_the_same_text(
    pg_events: list[ChangeEvent], kafka_broker: KafkaBroker
) -> None:
    """Schemaless (decimal.handling.mode=string) with no declared types: what JSON types (text,
    integers, arrays of text, NULL, unchanged TOAST) is equal; numeric, timestamptz, jsonb and
    uuid stay text."""
    kafka_events = _through_kafka(kafka_broker, pg_events, with_schema=False)
    raw = {
        "amount": str,
        "created_at": lambda v: v.isoformat().replace("+00:00", "Z"),
        "meta": json.dumps,
        "ref": str,
    }
    for pg, kafka in zip(pg_events, kafka_events, strict=True):
        expected = _positionless(pg)
        for side in ("before", "after"):
            row = getattr(expected, side)
            if row is not None:
                row = {
                    name: raw[name](v) if name in raw and v not in (None, UNCHANGED) else v
                    for name, v in row.items()
                }
                expected = dataclasses.replace(expected, **{side: row})
        assert _positionless(kafka) == expected
    engine = _engine(TEXT_RULES)
    assert _ops(engine, kafka_events) == _ops(engine, pg_events)
