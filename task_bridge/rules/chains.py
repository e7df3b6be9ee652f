"""Rule chains: the actions of one rule run in order for one event (SPEC section 5).

A rule with several actions is a chain: its operations share a `chain` key and the outbox
starts each one when the one before it is finished. An action whose `when` or `task` reads
`steps.<id>` cannot be rendered at ingest: its operation is stored *deferred*, with the event
(encoded losslessly as tagged JSON) and the action's raw templates, and `ChainRenderer`
renders it just before sending, with the results of the steps before it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from jinja2 import TemplateSyntaxError

from task_bridge.errors import TemplateError
from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.jsonenc import JsonNumber
from task_bridge.operations import DeferredStep, StepResult
from task_bridge.rules.schema import Action
from task_bridge.templating.sandbox import Renderer, Templates
from task_bridge.yamlsrc import did_you_mean

_TAG = "$t"


def chain_key(event: ChangeEvent, rule: str) -> str:
    return f"{event.position.key()}|{rule}"


# -- lossless event encoding ----------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_TAG: "float", "v": repr(value)}  # 'nan', 'inf', '-inf': JSON has none
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, JsonNumber):
        return {_TAG: "json_number", "v": str(value)}
    if value is UNCHANGED:
        return {_TAG: "unchanged"}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, timedelta):
        return {_TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        encoded = {str(k): _encode(v) for k, v in value.items()}
        return {_TAG: "dict", "v": encoded} if _TAG in value else encoded
    return {_TAG: "repr", "v": repr(value)}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _decode(v) for k, v in value.items()}
    raw = value.get("v")
    decoders: dict[str, Any] = {
        "unchanged": lambda _: UNCHANGED,
        "decimal": Decimal,
        "float": float,
        "json_number": JsonNumber,
        "datetime": datetime.fromisoformat,
        "date": date.fromisoformat,
        "time": time.fromisoformat,
        "timedelta": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
        "uuid": UUID,
        "bytes": base64.b64decode,
        "dict": lambda v: {k: _decode(x) for k, x in v.items()},
        "repr": str,
    }
    return decoders[tag](raw)


def encode_event(event: ChangeEvent) -> dict[str, Any]:
    pos = event.position
    return {
        "op": event.op,
        "schema": event.schema,
        "table": event.table,
        "position": [pos.kind, pos.lsn, pos.index, pos.topic, pos.partition, pos.offset],
        "after": _encode(event.after),
        "before": _encode(event.before),
        "key": _encode(event.key),
        "commit_time": _encode(event.commit_time),
        "txid": event.txid,
    }


def decode_event(data: Mapping[str, Any]) -> ChangeEvent:
    kind, lsn, index, topic, partition, offset = data["position"]
    return ChangeEvent(
        op=data["op"],
        schema=data["schema"],
        table=data["table"],
        position=SourcePosition(kind, lsn, index, topic, partition, offset),
        after=_decode(data["after"]),
        before=_decode(data["before"]),
        key=_decode(data["key"]),
        commit_time=_decode(data["commit_time"]),
        txid=data["txid"],
    )


# -- validation -------------------------------------------------------------------------------


def steps_used(templates: Templates, value: Any, condition: bool = False) -> set[str]:
    """Step ids a template (or every string of a task body) reads as `steps.<id>`."""
    if isinstance(value, str):
        source = "{{ " + value + " }}" if condition else value
        try:
            names = templates.names_used(source)
        except TemplateSyntaxError:
            return set()  # reported by the compiler
        return {name.removeprefix("steps.") for name in names if name.startswith("steps.")}
    if isinstance(value, dict):
        return set().union(*(steps_used(templates, v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(steps_used(templates, v) for v in value))
    return set()


def step_problems(
    templates: Templates, action: Action, earlier: list[str]
) -> tuple[list[tuple[str, str]], bool]:
    """Problems with an action's chain references as (its key, message): ids unique,
    `steps.<id>` only of earlier steps, never in `uid`; and whether it reads steps (it is
    then rendered at send time)."""
    problems: list[tuple[str, str]] = []
    if action.id is not None and action.id in earlier:
        problems.append(("id", f"duplicate step id '{action.id}'"))
    if steps_used(templates, action.uid):
        problems.append(
            (
                "uid",
                "uid cannot use steps.*: it must be known when the event is read"
                " (it orders the task's operations)",
            )
        )
    used = steps_used(templates, action.when, condition=True) if action.when else set()
    task_used = steps_used(templates, action.task) if action.task else set()
    for key, names in (("when", used), ("task", task_used)):
        for name in sorted(names - set(earlier)):
            hint = did_you_mean(name, earlier) or (
                f" (earlier steps: {', '.join(earlier)})" if earlier else ""
            )
            problems.append(
                (key, f"steps.{name}: no earlier action of this rule has id '{name}'{hint}")
            )
    return problems, bool(used or task_used)


# -- deferred operations ---------------------------------------------------------------------


def deferred_step(
    event: ChangeEvent, when: str | None, task: Any, step_ids: list[str]
) -> DeferredStep:
    """What the outbox stores for an action rendered at send time."""
    return DeferredStep(encode_event(event), when, task, tuple(step_ids))


def steps_context(step_ids: list[str], results: Mapping[str, StepResult]) -> dict[str, Any]:
    """`steps.<id>.ok/status/response` for every earlier step; not run -> ok false."""
    out: dict[str, Any] = {}
    for step_id in step_ids:
        result = results.get(step_id)
        out[step_id] = {
            "ok": bool(result and result.ok),
            "status": result.status if result else None,
            "response": result.response if result else None,
        }
    return out


class ChainRenderer:
    """Renders deferred operations at send time; compiled templates are cached."""

    def __init__(self, templates: Templates | None = None) -> None:
        self.templates = templates or Templates()
        self._conditions: dict[str, Renderer] = {}
        self._tasks: dict[str, Renderer] = {}

    def render(
        self, step: DeferredStep, results: Mapping[str, StepResult]
    ) -> dict[str, Any] | None:
        """The payload to send, or None when the action's `when` is false (skip the step).
        Raises `TemplateError` when a template fails (the op dead-letters)."""
        event = decode_event(step.event)
        names = {**event.template_context(), "steps": steps_context(list(step.steps), results)}
        ctx = self.templates.context(names)
        self.templates.budget.start()
        stage = "when"
        try:
            when = step.when
            if when is not None:
                condition = self._conditions.get(when)
                if condition is None:
                    condition = self._conditions[when] = self.templates.condition(when)
                if not condition(ctx):
                    return None
            stage = "task"
            task = step.task
            if task is None:
                return {}
            key = json.dumps(task, sort_keys=True)
            render = self._tasks.get(key)
            if render is None:
                render = self._tasks[key] = self.templates.value(task)
            rendered = render(ctx)
        except Exception as exc:  # the user's template failed at send time: dead-letter
            raise TemplateError(f"{stage}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(rendered, dict):
            raise TemplateError(f"task: rendered {type(rendered).__name__}, not a mapping")
        return rendered
