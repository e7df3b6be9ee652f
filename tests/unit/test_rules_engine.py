"""The rule engine over hand-made ChangeEvents: matching, typed payloads, per-op failures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.operations import operation_id
from task_bridge.rules import RuleEngine, load_rules
from task_bridge.yamlsrc import load_yaml_text

ROOT = Path(__file__).resolve().parents[2]


class _Target:
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        return []


def _engine(text: str) -> RuleEngine:
    doc = load_yaml_text(text, "bridge.yaml")
    ruleset = load_rules(
        doc.data["rules"],
        base_dir=Path("."),
        config_file="bridge.yaml",
        config_doc=doc,
        targets={"fragment": _Target(), "crm": _Target()},
    )
    return RuleEngine(ruleset)


def _event(
    op: str = "update",
    *,
    table: str = "orders",
    schema: str = "public",
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    index: int = 0,
) -> ChangeEvent:
    return ChangeEvent(
        op,
        schema,
        table,
        SourcePosition("postgres", lsn=0x16B3748, index=index),
        after=after,
        before=before,
        key={"id": (after or before or {}).get("id")},
    )


ORDER: dict[str, Any] = {
    "id": 42,
    "status": "paid",
    "amount": Decimal("99.90"),
    "created_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    "customer": "ACME",
    "tags": ["vip", "eu"],
    "meta": {"channel": "web"},
}

RULES = """
rules:
  - name: review-paid
    table: public.orders
    on: [insert, update]
    when: after.status == 'paid' and (before is none or before.status != 'paid')
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}-review"
        task:
          due_at: "{{ after.created_at + timedelta(hours=24) }}"
          fields:
            title: "Review order #{{ after.id }} ({{ after.customer }})"
            amount: "{{ after.amount }}"
            tags: "{{ after.tags }}"
            meta: "{{ after.meta }}"
            priority: 2
      - op: update
        target: crm
        when: after.amount > 50
        uid: "crm-{{ after.customer | lower }}"
        task: {fields: {big_order: "{{ after.id }}"}}
  - name: close-shipped
    table: public.orders
    on: [update, delete]
    when: op == 'delete' or after.status == 'shipped'
    actions:
      - {op: close, target: fragment, uid: "order-{{ row.id }}-review"}
  - name: audit-everything
    table: "audit.*"
    on: [insert, update, delete, snapshot, truncate]
    actions:
      - {op: create, target: crm, uid: "{{ schema }}.{{ table }}/{{ op }}"}
"""


def test_native_types_and_strings_in_payload() -> None:
    """Lone expressions keep Decimal, datetime (+timedelta), list, dict; text renders to str."""
    upsert, crm = _engine(RULES).evaluate(_event("insert", after=ORDER))
    assert (upsert.rule, upsert.action_index, upsert.target, upsert.op) == (
        "review-paid",
        0,
        "fragment",
        "upsert",
    )
    assert upsert.uid == "order-42-review" and upsert.error is None
    assert upsert.payload == {
        "due_at": datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        "fields": {
            "title": "Review order #42 (ACME)",
            "amount": Decimal("99.90"),
            "tags": ["vip", "eu"],
            "meta": {"channel": "web"},
            "priority": 2,
        },
    }
    assert (crm.target, crm.op, crm.uid, crm.payload) == (
        "crm",
        "update",
        "crm-acme",
        {"fields": {"big_order": 42}},
    )


def test_when_uses_before_and_after() -> None:
    """`when` sees before and after: an update from paid to paid causes nothing."""
    engine = _engine(RULES)
    assert engine.evaluate(_event(after=ORDER, before={**ORDER})) == []
    ops = engine.evaluate(_event(after=ORDER, before={**ORDER, "status": "new"}))
    assert [o.rule for o in ops] == ["review-paid", "review-paid"]


def test_action_when_skips_only_that_action() -> None:
    """An action's own falsy `when` drops that action; the others of the rule still run."""
    (only,) = _engine(RULES).evaluate(_event("insert", after={**ORDER, "amount": Decimal(5)}))
    assert (only.action_index, only.target) == (0, "fragment")


def test_on_filters_event_ops_and_delete_uses_row() -> None:
    """Rules fire only for the ops in `on`; a delete renders from `row` (the before image)."""
    engine = _engine(RULES)
    assert engine.evaluate(_event("snapshot", after=ORDER)) == []
    assert engine.evaluate(_event("truncate")) == []
    (close,) = engine.evaluate(_event("delete", before={"id": 42}))
    assert (close.rule, close.op, close.uid, close.payload) == (
        "close-shipped",
        "close",
        "order-42-review",
        {},
    )


def test_table_globs_and_cache() -> None:
    """A glob matches every table of its schema and nothing else; matches are cached per table."""
    engine = _engine(RULES)
    (op,) = engine.evaluate(_event("truncate", schema="audit", table="log"))
    assert op.uid == "audit.log/truncate" and op.payload == {}
    assert engine.evaluate(_event("insert", schema="other", table="log", after={"id": 1})) == []
    assert engine.evaluate(_event("insert", table="customers", after=ORDER)) == []
    assert [r.name for r in engine.rules_for("audit", "log")] == ["audit-everything"]
    assert engine.rules_for("audit", "log") is engine.rules_for("audit", "log")


def test_op_ids_are_stable_and_follow_the_position() -> None:
    """The same event twice gives equal operations; op_id is hash(position, rule, action)."""
    engine = _engine(RULES)
    event = _event("insert", after=ORDER, index=3)
    first = engine.evaluate(event)
    assert first == _engine(RULES).evaluate(event) == engine.evaluate(event)
    assert [o.op_id for o in first] == [
        operation_id(event.position, "review-paid", 0),
        operation_id(event.position, "review-paid", 1),
    ]
    other = engine.evaluate(_event("insert", after=ORDER, index=4))
    assert {o.op_id for o in first}.isdisjoint(o.op_id for o in other)
    assert all(o.position == event.position for o in first)


def test_template_error_fails_one_op_and_the_rest_still_run() -> None:
    """A missing column fails that action only, with rule, index and reason; others proceed."""
    rules = (
        RULES
        + """
  - name: broken
    table: public.orders
    actions:
      - {op: close, target: fragment, uid: "x-{{ after.id }}", task: {a: "{{ after.nope }}"}}
      - {op: close, target: fragment, uid: "y-{{ after.nope }}"}
      - {op: close, target: fragment, uid: "z-{{ after.id }}"}
"""
    )
    ops = _engine(rules).evaluate(_event("insert", after=ORDER))
    assert [(o.rule, o.action_index) for o in ops] == [
        ("review-paid", 0),
        ("review-paid", 1),
        ("broken", 0),
        ("broken", 1),
        ("broken", 2),
    ]
    failed_task, failed_uid, fine = ops[2:]
    assert failed_task.uid == "x-42" and failed_task.payload == {}
    assert (
        failed_task.error == "rule 'broken' action 0: task: 'dict object' has no attribute 'nope'"
    )
    assert failed_uid.uid == "<unrendered>"
    assert failed_uid.error == "rule 'broken' action 1: uid: 'dict object' has no attribute 'nope'"
    assert fine.error is None and fine.uid == "z-42"
    assert failed_task.op_id == operation_id(failed_task.position, "broken", 0)


def test_failing_when_fails_every_action_of_that_rule() -> None:
    """A `when` that cannot be evaluated dead-letters the rule's actions instead of skipping."""
    rules = """
rules:
  - name: needs-before
    table: orders
    when: before.status != 'paid'
    actions:
      - {op: close, target: fragment, uid: "a"}
      - {op: close, target: fragment, uid: "b"}
"""
    ops = _engine(rules).evaluate(_event("insert", after=ORDER))
    assert [(o.action_index, o.uid) for o in ops] == [(0, "<unrendered>"), (1, "<unrendered>")]
    assert ops[0].error == "rule 'needs-before' action 0: when: 'None' has no attribute 'status'"


def test_unchanged_toast_value_in_payload_is_an_error() -> None:
    """Rendering an UNCHANGED column fails the op with a message naming the column."""
    rules = """
rules:
  - name: doc
    table: docs
    actions:
      - op: upsert
        target: fragment
        uid: "doc-{{ after.id }}"
        task: {fields: {body: "{{ after.body }}"}}
      - op: upsert
        target: fragment
        when: after.body is not unchanged
        uid: "doc-{{ after.id }}"
        task: {fields: {body: "{{ after.body }}"}}
"""
    event = _event(table="docs", after={"id": 1, "body": UNCHANGED}, before={"id": 1})
    (op,) = _engine(rules).evaluate(event)
    assert op.uid == "doc-1" and op.payload == {}
    assert op.error == (
        "rule 'doc' action 0: task: column 'body' is an unchanged TOASTed value (UNCHANGED);"
        " not available in this event"
    )


def test_empty_uid_is_an_error() -> None:
    """A uid that renders blank fails the op rather than addressing a task named ''."""
    rules = """
rules:
  - name: blank
    table: orders
    actions:
      - {op: close, target: fragment, uid: "{{ after.customer }}"}
"""
    (op,) = _engine(rules).evaluate(_event("insert", after={**ORDER, "customer": " "}))
    assert op.uid == "<unrendered>"
    assert op.error == "rule 'blank' action 0: uid: rendered empty (' ')"


def test_null_in_a_uid_is_an_error_not_the_text_none() -> None:
    """A NULL column in a uid fails the op (every NULL row would share one task); the same
    NULL in a task field renders as usual; `or` gives a uid a fallback."""
    rules = """
rules:
  - name: nulls
    table: orders
    actions:
      - {op: upsert, target: fragment, uid: "order-{{ after.customer }}",
         task: {fields: {who: "by {{ after.customer }}"}}}
      - {op: upsert, target: fragment, uid: "order-{{ after.customer.upper() }}-x"}
      - {op: upsert, target: fragment, uid: "order-{{ after.customer or 'anon' }}"}
"""
    ops = _engine(rules).evaluate(_event("insert", after={**ORDER, "customer": None}))
    assert ops[0].error is not None and "uid: renders a NULL (None)" in ops[0].error
    assert ops[1].error is not None and ops[1].uid == "<unrendered>"
    assert ops[2].error is None and ops[2].uid == "order-anon"
    (named,) = _engine(rules).evaluate(_event("insert", after={**ORDER, "customer": "ann"}))[:1]
    assert named.uid == "order-ann" and named.payload == {"fields": {"who": "by ann"}}


def test_example_fragment_rules_on_the_orders_table() -> None:
    """rules/fragment.yaml turns a paid order into an upsert and a shipped one into a close."""
    ruleset = load_rules(
        "rules/fragment.yaml",
        base_dir=ROOT,
        config_file="bridge.yaml",
        config_doc=None,
        targets={"fragment": _Target()},
    )
    engine = RuleEngine(ruleset)
    assert ruleset.tables() == ["public.orders"]
    (upsert,) = engine.evaluate(_event("insert", after=ORDER))
    assert upsert.uid == "order-42-review" and upsert.error is None
    assert upsert.payload["due_at"] == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert upsert.payload["fields"]["amount"] == Decimal("99.90")
    shipped = {**ORDER, "status": "shipped"}
    (close,) = engine.evaluate(_event(after=shipped, before={**ORDER}))
    assert (close.op, close.uid) == ("close", "order-42-review")
