"""Sandboxed Jinja2 for rules: strict undefined, native types for a lone `{{ expr }}`.

Everything is compiled once at load time into small callables; a string with no Jinja markup
is a constant and costs nothing per event. Event data is only ever passed as variables, never
compiled. Nothing time-dependent is offered (`now()` is deliberately absent): replaying an
event must give the same operations.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.events import UNCHANGED
from bridge.jsonenc import dumps_payload

Renderer = Callable[[Context], Any]

UUID5_NAMESPACE = uuid.NAMESPACE_URL
_LONE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MARKUP = ("{{", "{%", "{#")


class UnchangedValueError(ValueError):
    """A rule used the value of an unchanged TOASTed column, which the event does not carry."""


def _uuid5(value: Any, namespace: str | None = None) -> str:
    ns = UUID5_NAMESPACE
    if namespace is not None:
        try:
            ns = uuid.UUID(namespace)
        except ValueError:
            ns = uuid.uuid5(UUID5_NAMESPACE, namespace)
    return str(uuid.uuid5(ns, str(value)))


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"isoformat needs a date, time or datetime, got {type(value).__name__}")


def _finalize(value: Any) -> Any:
    if value is UNCHANGED:
        raise UnchangedValueError("value is an unchanged TOASTed column (UNCHANGED)")
    return value


def make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, finalize=_finalize, keep_trailing_newline=True
    )
    env.filters["uuid5"] = _uuid5
    env.filters["tojson"] = dumps_payload
    env.filters["isoformat"] = _isoformat
    env.tests["unchanged"] = lambda value: value is UNCHANGED
    env.globals.clear()
    env.globals.update(timedelta=timedelta, UNCHANGED=UNCHANGED, range=range, dict=dict)
    return env


def _check_native(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if value is UNCHANGED:
        raise UnchangedValueError("value is an unchanged TOASTed column (UNCHANGED)")
    return value


class Templates:
    """Compiles rule strings into renderers. One per rule set.

    All renderers of one event share one jinja Context (`context()`), built once over the
    event's names and the globals: building a Context per template was most of the cost of
    rendering small templates on the hot path.
    """

    def __init__(self) -> None:
        self.env = make_environment()
        self._globals = dict(self.env.globals)

    def context(self, names: Mapping[str, Any]) -> Context:
        """The render context for one event: globals plus the event's names."""
        return self.env.context_class(self.env, {**self._globals, **names}, "rule", {})

    def expression(self, source: str) -> Renderer:
        """A `when`-style expression (no braces) -> callable returning its native value."""
        root = self.env.compile_expression(source, undefined_to_none=False)._template
        run = root.root_render_func

        def evaluate(ctx: Context) -> Any:
            for _ in run(ctx):
                pass
            return _check_native(ctx.vars.pop("result"))

        return evaluate

    def string(self, source: str) -> Renderer:
        if not any(marker in source for marker in _MARKUP):
            return lambda ctx: source
        lone = _LONE.match(source)
        if lone and not any(m in lone.group("expr") for m in ("{{", "}}", "{%", "%}")):
            return self.expression(lone.group("expr"))
        run, concat = self.env.from_string(source).root_render_func, self.env.concat
        return lambda ctx: concat(run(ctx))

    def value(self, value: Any) -> Renderer:
        """Recursively compile a YAML value: strings are templates, other scalars constants."""
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, dict):
            items = [(key, self.value(v)) for key, v in value.items()]
            return lambda ctx: {key: render(ctx) for key, render in items}
        if isinstance(value, list):
            parts = [self.value(v) for v in value]
            return lambda ctx: [render(ctx) for render in parts]
        return lambda ctx: value

    def names_used(self, source: str) -> set[str]:
        """Top-level attribute paths like `after.status` used by a template (for --check-source)."""
        ast = self.env.parse(source if any(m in source for m in _MARKUP) else "")
        found: set[str] = set()
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name):
                found.add(f"{node.node.name}.{node.attr}")
        return found
