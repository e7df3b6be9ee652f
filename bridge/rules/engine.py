"""The rule engine: a pure function ChangeEvent -> list[Operation]; no I/O, no clock."""

from __future__ import annotations

from jinja2.runtime import Context

from bridge.events import ChangeEvent
from bridge.operations import Operation, operation_id
from bridge.rules.loader import CompiledAction, CompiledRule, RuleSet

UNRENDERED_UID = "<unrendered>"


class RuleEngine:
    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._by_table: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}

    def rules_for(self, schema: str, table: str) -> tuple[CompiledRule, ...]:
        key = (schema, table)
        found = self._by_table.get(key)
        if found is None:
            qualified = f"{schema}.{table}"
            found = tuple(r for r in self.ruleset.rules if r.matches_table(qualified))
            self._by_table[key] = found
        return found

    def evaluate(self, event: ChangeEvent) -> list[Operation]:
        rules = [r for r in self.rules_for(event.schema, event.table) if event.op in r.ops]
        if not rules:
            return []
        ctx = self.ruleset.templates.context(event.template_context())
        ops: list[Operation] = []
        for rule in rules:
            try:
                if rule.when is not None and not rule.when(ctx):
                    continue
            except Exception as exc:  # a user's expression failing on this event: dead-letter it
                ops.extend(
                    self._failed(event, rule, a, f"when: {_describe(exc)}") for a in rule.actions
                )
                continue
            for action in rule.actions:
                op = self._action(event, rule, action, ctx)
                if op is not None:
                    ops.append(op)
        return ops

    def _action(
        self, event: ChangeEvent, rule: CompiledRule, action: CompiledAction, ctx: Context
    ) -> Operation | None:
        uid: str | None = None
        try:
            if action.when is not None and not action.when(ctx):
                return None
            rendered = action.uid(ctx)
            if rendered is None or str(rendered).strip() == "":
                raise ValueError("uid rendered empty")
            uid = str(rendered)
            payload = action.task(ctx) if action.task is not None else {}
        except Exception as exc:  # a user's template failing on this event: dead-letter the op
            return self._failed(event, rule, action, _describe(exc), uid)
        if not isinstance(payload, dict):
            return self._failed(event, rule, action, "task must render to a mapping", uid)
        return Operation(
            op_id=operation_id(event.position, rule.name, action.index),
            target=action.target,
            op=action.op,
            uid=uid,
            rule=rule.name,
            action_index=action.index,
            position=event.position,
            payload=payload,
        )

    @staticmethod
    def _failed(
        event: ChangeEvent,
        rule: CompiledRule,
        action: CompiledAction,
        message: str,
        uid: str | None = None,
    ) -> Operation:
        return Operation(
            op_id=operation_id(event.position, rule.name, action.index),
            target=action.target,
            op=action.op,
            uid=uid or UNRENDERED_UID,
            rule=rule.name,
            action_index=action.index,
            position=event.position,
            error=f"rule '{rule.name}' action {action.index}: {message}",
        )


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
