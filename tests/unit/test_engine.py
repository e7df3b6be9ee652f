"""The rule engine and its templates: pure, typed, deterministic, failing one op at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from task_bridge.errors import RuleError
from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.rules.engine import RuleEngine
from task_bridge.rules.loader import RuleSet, load_rules
from task_bridge.yamlsrc import load_yaml_text


class _Target:
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        return []


def _rules(text: str) -> RuleSet:
    doc = load_yaml_text(text, "bridge.yaml")
    return load_rules(
        doc.data["rules"],
        base_dir=Path("."),
        config_file="bridge.yaml",
        config_doc=doc,
        targets={"fragment": _Target()},
    )


def _event(op: str = "insert", table: str = "orders", index: int = 0, **cols: Any) -> ChangeEvent:
    after = None if op == "delete" else cols
    before = cols if op == "delete" else None
    return ChangeEvent(
        op,
        "public",
        table,
        SourcePosition("postgres", lsn=42, index=index),
        after=after,
        before=before,
    )


RULES = """
rules:
  - name: review
    table: public.ord*
    on: [insert, update]
    when: after.status == 'paid'
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task:
          due_at: "{{ after.created_at + timedelta(hours=24) }}"
          fields:
            title: "Order #{{ after.id }} for {{ after.amount }}"
            amount: "{{ after.amount }}"
            meta: "{{ after.meta }}"
            ref: "{{ after.ref | string | uuid5 }}"
            day: "{{ after.created_at | isoformat }}"
            json: "{{ after.meta | tojson }}"
            constant: plain text
            number: 7
  - name: close
    table: orders
    on: [delete]
    actions:
      - {op: close, target: fragment, uid: "order-{{ row.id }}"}
"""

ROW = {
    "id": 5,
    "status": "paid",
    "amount": Decimal("12.50"),
    "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "meta": {"a": [1, 2]},
    "ref": UUID("a8098c1a-f86e-11da-bd1a-00112444be1e"),
}


def test_lone_expressions_keep_native_types_and_strings_render() -> None:
    """A lone {{ expr }} keeps Decimal/datetime/dict; mixed text renders to str; filters work."""
    (op,) = RuleEngine(_rules(RULES)).evaluate(_event(**ROW))
    assert op.uid == "order-5" and op.op == "upsert" and op.error is None
    fields = op.payload["fields"]
    assert op.payload["due_at"] == datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC)
    assert fields["amount"] == Decimal("12.50") and fields["meta"] == {"a": [1, 2]}
    assert fields["title"] == "Order #5 for 12.50"
    assert UUID(fields["ref"]).version == 5
    assert fields["day"] == "2026-01-02T03:04:05+00:00"
    assert fields["json"] == '{"a":[1,2]}'
    assert fields["constant"] == "plain text" and fields["number"] == 7


def test_matching_on_glob_op_and_when() -> None:
    """Globs, `on` and `when` select rules; deletes use `row`."""
    engine = RuleEngine(_rules(RULES))
    assert engine.evaluate(_event(**{**ROW, "status": "new"})) == []
    assert engine.evaluate(_event(table="customers", **ROW)) == []
    (close,) = engine.evaluate(_event("delete", **ROW))
    assert (close.rule, close.op, close.uid, close.payload) == ("close", "close", "order-5", {})


def test_op_ids_are_deterministic_and_distinct_per_position() -> None:
    """Evaluating the same event twice gives the same op ids; another index, other ids."""
    engine = RuleEngine(_rules(RULES))
    first = engine.evaluate(_event(**ROW))
    assert first == engine.evaluate(_event(**ROW))
    assert first[0].op_id != engine.evaluate(_event(index=1, **ROW))[0].op_id


def test_template_error_dead_letters_one_op_and_others_still_run() -> None:
    """A missing column fails that rule's op (with rule, action and reason); others run."""
    rules = (
        RULES
        + """
  - name: broken
    table: public.orders
    actions:
      - {op: upsert, target: fragment, uid: "x-{{ after.nope }}"}
"""
    )
    ops = RuleEngine(_rules(rules)).evaluate(_event(**ROW))
    assert [o.rule for o in ops] == ["review", "broken"]
    assert ops[0].error is None
    assert ops[1].error is not None and "rule 'broken' action 0" in ops[1].error
    assert "nope" in ops[1].error


def test_unchanged_toast_value_is_visible_and_never_rendered() -> None:
    """Rules can test `is unchanged`; rendering an UNCHANGED value is an error, not 'None'."""
    rules = """
rules:
  - name: doc
    table: public.docs
    actions:
      - op: upsert
        target: fragment
        uid: "doc-{{ after.id }}"
        task: {fields: {skipped: "{{ after.body is unchanged }}", body: "{{ after.body }}"}}
"""
    (op,) = RuleEngine(_rules(rules)).evaluate(_event(table="docs", id=1, body=UNCHANGED))
    assert op.error is not None and "UNCHANGED" in op.error


def test_no_clock_in_templates() -> None:
    """now() is absent: a rule using it does not render (replays must be deterministic)."""
    rules = """
rules:
  - name: clock
    table: public.orders
    actions:
      - {op: upsert, target: fragment, uid: "x", task: {due_at: "{{ now() }}"}}
"""
    (op,) = RuleEngine(_rules(rules)).evaluate(_event(**ROW))
    assert op.error is not None and "now" in op.error


def test_inline_rule_errors_name_line_and_key_path() -> None:
    """Inline rules in bridge.yaml report bridge.yaml:line with the rule and key path."""
    with pytest.raises(RuleError) as err:
        _rules(
            "rules:\n  - name: r\n    table: orders\n    actions:\n"
            "      - {op: explode, target: fragment, uid: x}\n"
        )
    assert err.value.problems == [
        "bridge.yaml:5: rule 'r': actions[0].op: target 'fragment' does not support op"
        " 'explode' (supported: close, create, update, upsert)"
    ]
