"""The rule engine: a pure function ChangeEvent -> list[Operation]; no I/O, no clock.

A rule whose `when` or templates fail on one event does not stop anything: each affected
action becomes an Operation carrying `error` (the outbox stores it as dead, with the reason),
and every other rule and action still runs. A rule with several actions is a chain
(`task_bridge.rules.chains`): its ops share a chain key, and actions reading `steps.*` are stored
unrendered, to be rendered at send time.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError as JinjaTemplateError
from jinja2.runtime import Context

from task_bridge.events import ChangeEvent
from task_bridge.jsonenc import PayloadError, payload_size
from task_bridge.operations import Operation, operation_id
from task_bridge.rules.chains import chain_key, deferred_step
from task_bridge.rules.loader import CompiledAction, CompiledRule, RuleSet
from task_bridge.templating.budget import RenderBudget
from task_bridge.templating.sandbox import NullUidError, UnchangedValueError

UNRENDERED_UID = "<unrendered>"


class RuleEngine:
    """Evaluates a rule set; caches which rules match each (schema, table)."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._by_table: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        used = ruleset.templates.names_referenced
        self._skip = frozenset(name for name in ("changed", "source") if name not in used)

    def rules_for(self, schema: str, table: str) -> tuple[CompiledRule, ...]:
        key = (schema, table)
        found = self._by_table.get(key)
        if found is None:
            qualified = f"{schema}.{table}"
            found = tuple(r for r in self.ruleset.rules if r.matches_table(qualified))
            self._by_table[key] = found
        return found

    def evaluate(self, event: ChangeEvent) -> list[Operation]:
        """The operations `event` causes, in rule order then action order."""
        rules = [r for r in self.rules_for(event.schema, event.table) if event.op in r.ops]
        if not rules:
            return []
        budget = self.ruleset.templates.budget
        budget.start()
        ctx = self.ruleset.templates.context(event.template_context(self._skip))
        ops: list[Operation] = []
        for rule in rules:
            chain = chain_key(event, rule.name) if rule.chained else None
            try:
                if rule.when is not None and not rule.when(ctx):
                    continue
            except Exception as exc:  # the user's expression failed on this event: dead-letter
                reason = f"when: {describe(exc)}"
                ops.extend(_failed(event, rule, a, reason, chain) for a in rule.actions)
                continue
            for action in rule.actions:
                op = _action(event, rule, action, ctx, chain, budget)
                if op is not None:
                    ops.append(op)
        return ops


def _action(
    event: ChangeEvent,
    rule: CompiledRule,
    action: CompiledAction,
    ctx: Context,
    chain: str | None,
    budget: RenderBudget,
) -> Operation | None:
    uid: str | None = None
    stage = "when"
    try:
        if not action.deferred and action.when is not None and not action.when(ctx):
            return None
        stage = "uid"
        rendered = action.uid(ctx)
        if not isinstance(rendered, str) or not rendered.strip():
            return _failed(event, rule, action, f"uid: rendered empty ({rendered!r})", chain)
        uid, stage = rendered, "task"
        deferred = None
        if action.deferred and action.model is not None:
            payload: dict[str, Any] = {}
            deferred = deferred_step(
                event, action.model.when, action.model.task, list(action.earlier_steps)
            )
        else:
            payload = action.task(ctx) if action.task is not None else {}
            _check_size(payload, budget)
    except Exception as exc:  # the user's template failed on this event: dead-letter the op
        return _failed(event, rule, action, f"{stage}: {describe(exc)}", chain, uid)
    return Operation(
        op_id=operation_id(event.position, rule.name, action.index),
        target=action.target,
        op=action.op,
        uid=uid,
        rule=rule.name,
        action_index=action.index,
        position=event.position,
        payload=payload,
        deferred=deferred,
        **_chain_fields(action, chain),
    )


def _check_size(payload: Any, budget: RenderBudget) -> None:
    """A payload over `limits.payload_bytes` dead-letters its op here, not in the outbox."""
    if not payload:
        return
    try:
        size = payload_size(payload)
    except PayloadError:
        return  # stored as an unencodable note by the outbox, with its reason
    budget.check_size(size, "the payload")


def _chain_fields(action: CompiledAction, chain: str | None) -> dict[str, Any]:
    if chain is None or action.model is None:
        return {}
    return {"chain": chain, "step_id": action.model.id, "on_error": action.model.on_error}


def _failed(
    event: ChangeEvent,
    rule: CompiledRule,
    action: CompiledAction,
    message: str,
    chain: str | None = None,
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
        **_chain_fields(action, chain),
    )


def describe(exc: Exception) -> str:
    """A template failure as one line: our own and Jinja's messages as they are, others typed."""
    if isinstance(exc, UnchangedValueError | NullUidError | PayloadError | JinjaTemplateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
