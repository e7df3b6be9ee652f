"""Sandboxed Jinja2 for rules: strict undefined names, native types for a lone `{{ expr }}`.

Everything is compiled once at load time into small callables; a string with no Jinja markup
is a constant and costs nothing per event. Event data is only ever passed as variables, never
compiled. Nothing time-dependent or random is offered (`now()`, `lipsum`, `random` are absent):
replaying an event must give the same operations.

An unchanged TOASTed column (`UNCHANGED`) can be tested (`after.body is unchanged`) but never
rendered: doing so raises `UnchangedValueError` naming the column.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

from jinja2 import StrictUndefined, Undefined, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from task_bridge.events import UNCHANGED
from task_bridge.jsonenc import dumps_payload
from task_bridge.templating.budget import RenderBudget, RenderLimitError

Renderer = Callable[[Context], Any]

UUID5_NAMESPACE: Final = uuid.NAMESPACE_URL
# `{{ expr }}` alone (whitespace control `{{-`/`-}}` allowed): keeps the value's native type
_LONE: Final = re.compile(r"^\s*\{\{[-+]?(?P<expr>.*?)[-+]?\}\}\s*$", re.DOTALL)
_MARKUP: Final = ("{{", "{%", "{#")
_INNER_MARKUP: Final = ("{{", "}}", "{%", "%}", "{#", "#}")
_NON_DETERMINISTIC_FILTERS: Final = ("random", "shuffle")
# `after.id`, `op`: a name and attribute steps, the commonest template of all
_PATH: Final = re.compile(r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*$")
_TEXT_PART: Final = re.compile(r"\{\{-?\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*-?\}\}")
_COMPARE: Final = re.compile(
    r"^\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*(==|!=)\s*(?:'([^'\\{}]*)'|\"([^\"\\{}]*)\"|(-?\d+))\s*$"
)
_MISSING: Final = object()
_CONSTANTS: Final = frozenset({"true", "false", "none", "True", "False", "None"})


class UnchangedValueError(ValueError):
    """A rule rendered an unchanged TOASTed column, a value this event does not carry."""

    def __init__(self, column: str | None) -> None:
        what = f"column '{column}'" if column else "a column"
        super().__init__(
            f"{what} is an unchanged TOASTed value (UNCHANGED); not available in this event"
        )
        self.column = column


class UnchangedColumn:
    """What `after.<column>` gives for an `UNCHANGED` value: falsy, equal to `UNCHANGED`,
    and remembering its column so an attempt to render it names the column."""

    __slots__ = ("column",)

    def __init__(self, column: str) -> None:
        self.column = column

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is UNCHANGED or isinstance(other, UnchangedColumn)

    def __hash__(self) -> int:
        return hash(UNCHANGED)

    def __repr__(self) -> str:
        return f"UNCHANGED({self.column})"

    def __str__(self) -> str:
        raise UnchangedValueError(self.column)


def is_unchanged(value: Any) -> bool:
    return value is UNCHANGED or isinstance(value, UnchangedColumn)


def reject_unchanged(value: Any, column: str | None = None) -> None:
    """Raise `UnchangedValueError` if `value` is, or contains, an unchanged TOASTed value."""
    if value is UNCHANGED:
        raise UnchangedValueError(column)
    if isinstance(value, UnchangedColumn):
        raise UnchangedValueError(value.column)
    if isinstance(value, dict):
        for key, item in value.items():
            reject_unchanged(item, str(key))
    elif isinstance(value, list | tuple):
        for item in value:
            reject_unchanged(item, column)


def _uuid5(value: Any, namespace: str | None = None) -> str:
    """Deterministic UUID of `str(value)`; `namespace` is a UUID or any string (hashed)."""
    ns = UUID5_NAMESPACE
    if namespace is not None:
        try:
            ns = uuid.UUID(namespace)
        except ValueError:
            ns = uuid.uuid5(UUID5_NAMESPACE, namespace)
    return str(uuid.uuid5(ns, str(value)))


def _isoformat(value: Any) -> str:
    reject_unchanged(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"isoformat needs a date, time or datetime, got {type(value).__name__}")


def _tojson(value: Any) -> str:
    reject_unchanged(value)
    return dumps_payload(value)


# values that can be neither UNCHANGED nor contain it: returned as they are, checked first
_PLAIN: Final = frozenset({str, int, float, bool, type(None), Decimal, datetime, date, time})


def _finalize(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if is_unchanged(value) or isinstance(value, dict | list | tuple):
        reject_unchanged(value)
    return value


class RuleEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with event rows read as rows: `after.items` is the column `items` when
    the row has one (a dict method otherwise), and an `UNCHANGED` value knows its column.

    Every call, attribute or item read and operator spends from the render budget, and `*`,
    `**` and `+` are checked before they run (which also keeps Jinja from folding
    `'a' * 10**9` at compile time)."""

    intercepted_binops = frozenset({"*", "**", "+"})
    budget: RenderBudget

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.budget.binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.spend()
        if type(obj) is dict:
            try:
                value = obj[attribute]
            except KeyError:
                return super().getattr(obj, attribute)
            return UnchangedColumn(attribute) if value is UNCHANGED else value
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: str | Any) -> Any:
        self.budget.spend()
        value = super().getitem(obj, argument)
        return UnchangedColumn(str(argument)) if value is UNCHANGED else value

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """`timedelta(hours=24)` straight away: a plain value type we offer, nothing to
        check (the sandbox's checks cost more than the call on the hot path)."""
        __self.budget.spend()
        if __obj is timedelta:
            return timedelta(*args, **kwargs)
        return super().call(__context, __obj, *args, **kwargs)


class NullUidError(ValueError):
    """A uid template rendered a NULL value."""


def _finalize_uid(value: Any) -> Any:
    if value is None:
        raise NullUidError(
            "renders a NULL (None): rows with NULL there would all share one task;"
            " use `x or 'none'`, or a `when` that skips such rows"
        )
    return _finalize(value)


def make_environment(
    finalize: Callable[[Any], Any] = _finalize, budget: RenderBudget | None = None
) -> RuleEnvironment:
    env = RuleEnvironment(
        undefined=StrictUndefined, autoescape=False, finalize=finalize, keep_trailing_newline=True
    )
    env.budget = budget if budget is not None else RenderBudget()
    for name in _NON_DETERMINISTIC_FILTERS:
        env.filters.pop(name, None)
    env.filters.update(uuid5=_uuid5, tojson=_tojson, isoformat=_isoformat)
    env.tests["unchanged"] = is_unchanged
    env.globals.clear()  # drops lipsum (random), cycler, joiner, namespace
    env.globals.update(timedelta=timedelta, UNCHANGED=UNCHANGED, range=env.budget.range, dict=dict)
    return env


def _native(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if is_unchanged(value) or isinstance(value, dict | list | tuple):
        reject_unchanged(value)
    return value


def _condition(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if is_unchanged(value):
        raise UnchangedValueError(value.column if isinstance(value, UnchangedColumn) else None)
    return value


def _resolve(ctx: Context, path: tuple[str, ...]) -> Any:
    """`after.id` read the way `RuleEnvironment` reads it, for plain dicts; anything else
    (a missing name or key, a non-dict step) -> `_MISSING`, and the caller asks Jinja."""
    obj = ctx.resolve_or_missing(path[0])
    for attr in path[1:]:
        if type(obj) is not dict:
            return _MISSING
        value = obj.get(attr, _MISSING)
        if value is _MISSING:
            return _MISSING
        obj = UnchangedColumn(attr) if value is UNCHANGED else value
    return _MISSING if obj is missing or isinstance(obj, Undefined) else obj


def _fast_path(source: str, slow: Renderer, check: Callable[[Any], Any]) -> Renderer:
    """For a bare attribute path, read the value directly; Jinja only when that fails (it
    then raises the usual strict-undefined error). Same results, a fraction of the cost."""
    compare = _COMPARE.match(source)
    if compare is not None:  # `after.status == 'paid'`, `after.n != 3`
        return _fast_compare(compare, slow, check)
    match = _PATH.match(source)
    if match is None:
        return slow
    path = tuple(match.group(1).split("."))
    if path[0] in _CONSTANTS:
        return slow

    def evaluate(ctx: Context) -> Any:
        value = _resolve(ctx, path)
        return slow(ctx) if value is _MISSING else check(value)

    return evaluate


def _fast_compare(match: re.Match[str], slow: Renderer, check: Callable[[Any], Any]) -> Renderer:
    path = tuple(match.group(1).split("."))
    if path[0] in _CONSTANTS:
        return slow
    number = match.group(5)
    literal: Any = int(number) if number is not None else (match.group(3) or match.group(4) or "")
    equal = match.group(2) == "=="

    def evaluate(ctx: Context) -> Any:
        value = _resolve(ctx, path)
        if value is _MISSING:
            return slow(ctx)
        return check((value == literal) if equal else (value != literal))

    return evaluate


def _fast_text(
    source: str, slow: Callable[[Context], str], finalize: Callable[[Any], Any]
) -> Callable[[Context], str]:
    """Text made only of literals and `{{ path }}` parts, joined directly (Jinja otherwise)."""
    parts: list[str | tuple[str, ...]] = []
    end = 0
    for match in _TEXT_PART.finditer(source):
        parts.append(source[end : match.start()])
        parts.append(tuple(match.group(1).split(".")))
        end = match.end()
    parts.append(source[end:])
    literals = [p for p in parts if isinstance(p, str)]
    if (
        any(m in lit for lit in literals for m in _INNER_MARKUP)
        or "{{-" in source
        or "-}}" in source
    ):
        return slow  # other markup, or whitespace control that trims the literals
    if any(isinstance(p, tuple) and p[0] in _CONSTANTS for p in parts):
        return slow

    def render(ctx: Context) -> str:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _resolve(ctx, part)
            if value is _MISSING:
                return slow(ctx)
            out.append(str(finalize(value)))
        return "".join(out)

    return render


def lone_expression(source: str) -> str | None:
    """The expression of a template that is exactly one `{{ expr }}`, else None."""
    match = _LONE.match(source)
    if match is None:
        return None
    expr = match.group("expr")
    return None if any(m in expr for m in _INNER_MARKUP) else expr


_BINOPS: Final = {"*": lambda a, b: a * b, "**": lambda a, b: a**b, "+": lambda a, b: a + b}


def _constant(node: nodes.Node, budget: RenderBudget) -> Any:
    """The value of a constant expression, computed only when the budget allows it (None for
    anything that is not constant)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
        left, right = _constant(node.left, budget), _constant(node.right, budget)
        if left is None or right is None:
            return None
        budget.binop(node.operator, left, right)
        try:
            return _BINOPS[node.operator](left, right)
        except (TypeError, ValueError, ArithmeticError):
            return None
    return None


class Templates:
    """Compiles rule strings into renderers. One per rule set.

    All renderers of one event share one jinja Context (`context()`), built once over the
    event's names and the globals: building a Context per template was most of the cost of
    rendering small templates on the hot path. A template's own `{% set %}` names are
    cleared after it renders so they cannot leak into the next template.
    """

    def __init__(self, budget: RenderBudget | None = None) -> None:
        """`budget`: the bounds on one event's renders (`start()` it per event)."""
        self.budget = budget if budget is not None else RenderBudget()
        self.env = make_environment(budget=self.budget)
        self.uid_env = make_environment(_finalize_uid, self.budget)  # a NULL is an error
        self._globals = dict(self.env.globals)
        self.names_referenced: set[str] = set()
        """Top-level names any compiled template reads (the engine skips building the
        others, e.g. `changed`)."""

    def _note(self, template_source: str) -> None:
        self.names_referenced |= meta.find_undeclared_variables(self.env.parse(template_source))

    def context(self, names: Mapping[str, Any]) -> Context:
        """The render context for one event: globals plus the event's names."""
        return self.env.context_class(self.env, {**self._globals, **names}, "rule", {})

    def _expression(self, source: str, check: Callable[[Any], Any]) -> Renderer:
        # compile_expression parses exactly one expression (no `%}` smuggled in) into a
        # template `{% set result = expr %}`; running its root function on the shared
        # Context avoids building a Context per call (what calling the expression does).
        run = self.env.compile_expression(source, undefined_to_none=False)._template
        self._note("{{ (" + source + ") }}")
        root = run.root_render_func

        def evaluate(ctx: Context) -> Any:
            for _ in root(ctx):
                pass
            return check(ctx.vars.pop("result"))

        return evaluate

    def condition(self, source: str) -> Renderer:
        """A `when` expression (no braces) -> its value; an undefined name or an
        UNCHANGED result raises rather than silently counting as false."""
        return _fast_path(source, self._expression(source, _condition), _condition)

    def expression(self, source: str) -> Renderer:
        """An expression (no braces) -> its native value, never UNCHANGED."""
        return _fast_path(source, self._expression(source, _native), _native)

    def string(self, source: str) -> Renderer:
        """A task value: constant text, a lone `{{ expr }}` (native type) or text (str)."""
        if not any(marker in source for marker in _MARKUP):
            return lambda ctx: source
        expr = lone_expression(source)
        if expr is not None:
            return self.expression(expr)
        return self.text(source)

    def uid(self, source: str) -> Renderer:
        """A task uid: text, where a NULL value is an error instead of `None`."""
        return self.text(source, uid=True)

    def text(self, source: str, uid: bool = False) -> Renderer:
        """A template that always renders to str."""
        if not any(marker in source for marker in _MARKUP):
            return lambda ctx: source
        env = self.uid_env if uid else self.env
        root, concat = env.from_string(source).root_render_func, env.concat
        self._note(source)
        chunks = self.budget.chunks

        def render(ctx: Context) -> str:
            try:
                return concat(chunks(root(ctx)))
            finally:
                if ctx.vars:
                    ctx.vars.clear()

        return _fast_text(source, render, _finalize_uid if uid else _finalize)

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

    def oversized_constant(self, source: str) -> str | None:
        """Why a constant operation in `source` (`'a' * 10**9`, `9**9**9`) would break the
        render budget on every event, or None: `validate` says so instead of every op dying."""
        if not any(m in source for m in _MARKUP):
            return None
        self.budget.start()  # a fresh budget for this one check
        try:
            for node in self.env.parse(source).find_all(nodes.BinExpr):
                _constant(node, self.budget)
        except RenderLimitError as exc:
            return str(exc)
        return None

    def names_used(self, source: str) -> set[str]:
        """Top-level attribute paths like `after.status` used by a template (for --check-source)."""
        ast = self.env.parse(source if any(m in source for m in _MARKUP) else "")
        found: set[str] = set()
        for node in ast.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name):
                found.add(f"{node.node.name}.{node.attr}")
        return found
