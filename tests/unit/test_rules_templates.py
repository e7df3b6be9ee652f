"""Rule templates: sandboxed, deterministic, typed, and loud about unchanged TOASTed values."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError

from task_bridge.events import UNCHANGED
from task_bridge.templating.sandbox import Templates, UnchangedValueError, _native, lone_expression

ROW: dict[str, Any] = {
    "id": 7,
    "amount": Decimal("12.50"),
    "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "day": date(2026, 1, 2),
    "ref": uuid.UUID("a8098c1a-f86e-11da-bd1a-00112444be1e"),
    "tags": ["a", "b"],
    "meta": {"channel": "web", "n": 1},
    "note": None,
    "body": UNCHANGED,
    "items": "a column named like a dict method",
}


def _render(source: str, **names: Any) -> Any:
    templates = Templates()
    return templates.string(source)(templates.context({"after": ROW, **names}))


def test_lone_expression_keeps_native_types() -> None:
    """`{{ expr }}` alone (whitespace and `{{-` allowed) returns the value itself, not text."""
    assert _render("{{ after.amount }}") == Decimal("12.50")
    assert _render("  {{ after.created_at + timedelta(hours=24) }}\n") == datetime(
        2026, 1, 3, 3, 4, 5, tzinfo=UTC
    )
    assert _render("{{- after.meta -}}") == {"channel": "web", "n": 1}
    assert _render("{{ after.tags }}") == ["a", "b"]
    assert _render("{{ after.note }}") is None
    assert _render("{{ after.id * 2 }}") == 14


def test_mixed_text_renders_to_a_string() -> None:
    """Text around an expression, or two expressions, renders to str."""
    assert _render("#{{ after.id }}: {{ after.amount }}") == "#7: 12.50"
    assert _render("{{ after.id }}{{ after.id }}") == "77"
    assert _render("{% if after.id > 5 %}big{% else %}small{% endif %}") == "big"


def test_lone_expression_detection() -> None:
    """Only a template that is exactly one `{{ ... }}` counts as a lone expression."""
    assert lone_expression("{{ a.b }}") == " a.b "
    assert lone_expression("{{- a -}}") == " a "
    assert lone_expression("{{ a }} and {{ b }}") is None
    assert lone_expression("x {{ a }}") is None
    assert lone_expression("{{ a }}{% if b %}{% endif %}") is None


def test_constant_strings_are_not_rendered() -> None:
    """A string without Jinja markup comes back as the same object, whatever the context."""
    source = "plain text with {braces} but no markup"
    templates = Templates()
    render = templates.string(source)
    assert render(templates.context({})) is source


def test_filters_uuid5_tojson_isoformat() -> None:
    """uuid5 is deterministic (and namespaced), tojson handles Decimal/datetime/UUID, isoformat."""
    first = _render("{{ 'order-7' | uuid5 }}")
    assert first == _render("{{ after.id | string | replace('7', 'order-7') | uuid5 }}")
    assert first == str(uuid.uuid5(uuid.NAMESPACE_URL, "order-7"))
    assert _render("{{ 'order-7' | uuid5('shop') }}") != first
    ns = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
    assert _render("{{ 'x' | uuid5('" + ns + "') }}") == str(uuid.uuid5(uuid.UUID(ns), "x"))
    assert _render("{{ [after.amount, after.created_at, after.ref, after.day] | tojson }}") == (
        '["12.50","2026-01-02T03:04:05+00:00","a8098c1a-f86e-11da-bd1a-00112444be1e","2026-01-02"]'
    )
    assert _render("{{ after.meta | tojson }}") == '{"channel":"web","n":1}'
    assert _render("{{ after.created_at | isoformat }}") == "2026-01-02T03:04:05+00:00"
    with pytest.raises(TypeError, match="isoformat needs a date"):
        _render("{{ after.id | isoformat }}")


def test_nothing_time_dependent_or_random() -> None:
    """now(), lipsum() and the random/shuffle filters are absent (replays must match)."""
    for source in ("{{ now() }}", "{{ lipsum() }}"):
        with pytest.raises(UndefinedError):
            _render(source)
    for source in ("{{ after.tags | random }}", "{{ after.tags | shuffle }}"):
        with pytest.raises(TemplateSyntaxError, match="No filter named"):
            _render(source)


def test_strict_undefined_names_fail() -> None:
    """A missing column or name raises instead of rendering as empty."""
    with pytest.raises(UndefinedError, match="nope"):
        _render("x-{{ after.nope }}")
    with pytest.raises(UndefinedError, match="nope"):
        _render("{{ after.nope }}")
    with pytest.raises(UndefinedError):
        _render("{{ before.id }}", before=None)


def test_sandbox_blocks_internals_and_mutation() -> None:
    """Dunder access and mutating event data are refused by the sandbox."""
    with pytest.raises(SecurityError):
        _render("{{ after.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        _render("{{ after.tags.append(1) }}")
    assert ROW["tags"] == ["a", "b"]


def test_event_data_is_never_evaluated_as_a_template() -> None:
    """A column holding Jinja markup renders as that text, unevaluated."""
    payload = {"title": "{{ 7 * 7 }}"}
    assert _render("{{ row.title }}", row=payload) == "{{ 7 * 7 }}"
    assert _render("t: {{ row.title }}", row=payload) == "t: {{ 7 * 7 }}"


def test_columns_win_over_dict_methods() -> None:
    """`after.items` is the column `items` when the row has one; `.get` still works."""
    assert _render("{{ after.items }}") == "a column named like a dict method"
    assert _render("{{ after.meta.get('channel') }}") == "web"
    assert _render("{{ after['id'] }}") == 7


def test_unchanged_value_can_be_tested_but_not_rendered() -> None:
    """`is unchanged` works; rendering an UNCHANGED column raises, naming the column."""
    assert _render("{{ after.body is unchanged }}") is True
    assert _render("{{ after.body == UNCHANGED }}") is True
    assert _render("{{ after.id is unchanged }}") is False
    assert _render("{{ after.body or 'fallback' }}") == "fallback"
    message = "column 'body' is an unchanged TOASTed value (UNCHANGED); not available in this event"
    for source in (
        "{{ after.body }}",
        "text {{ after.body }}",
        "{{ 'x' ~ after.body }}",
        "{{ after['body'] }}",
        "{{ after.body | tojson }}",
        "{{ after | tojson }}",
        "{{ after }}",
        "{{ [after.body] }}",
    ):
        with pytest.raises(UnchangedValueError) as err:
            _render(source)
        assert str(err.value) == message, source


def test_when_conditions() -> None:
    """Conditions give native values; an UNCHANGED result is an error, not a silent false."""
    templates = Templates()
    ctx = templates.context({"after": ROW, "before": {**ROW, "id": 6}, "op": "update"})
    assert templates.condition("after.id != before.id and op == 'update'")(ctx) is True
    assert templates.condition("after.body is unchanged")(ctx) is True
    with pytest.raises(UnchangedValueError, match="'body'"):
        templates.condition("after.body")(ctx)
    with pytest.raises(UndefinedError):
        templates.condition("after.nope == 1")(ctx)


def test_set_inside_one_template_does_not_leak_into_the_next() -> None:
    """Names a template assigns with {% set %} are gone when the next template renders."""
    templates = Templates()
    ctx = templates.context({"after": ROW})
    assert templates.text("{% set after = 'shadow' %}{{ after }}")(ctx) == "shadow"
    assert templates.string("{{ after.id }}")(ctx) == 7


def test_value_renders_nested_task_bodies() -> None:
    """Dicts and lists are rendered recursively; non-string scalars are kept as they are."""
    templates = Templates()
    render = templates.value(
        {"due": "{{ after.day + timedelta(days=1) }}", "n": 3, "ok": True, "l": ["{{ after.id }}"]}
    )
    assert render(templates.context({"after": ROW})) == {
        "due": date(2026, 1, 3),
        "n": 3,
        "ok": True,
        "l": [7],
    }
    assert timedelta(days=1) == templates.expression("timedelta(days=1)")(templates.context({}))


FAST_CASES = [
    "{{ after.id }}",
    "order-{{ after.id }}-{{ after.status }}",
    "{{after.amount}}",
    "{{ after.meta.channel }}",
    "{{ after.nothing }}",
    "{{ before.status }}",
    "{{ after.body }}",
    "{{ after.items }}",
    "x {{- after.id }} y",
    "{{ op }}/{{ table }}",
    "{{ missing_name }}",
    "{{ after.tags }}",
    "{{ none }}",
]


@pytest.mark.parametrize("source", FAST_CASES)
def test_direct_path_reads_match_jinja(source: str) -> None:
    """Templates read as plain attribute paths give exactly what the sandboxed Jinja
    environment gives: the same value or text, or the same kind of error."""
    names = {
        "op": "insert",
        "table": "orders",
        "after": {
            "id": 7,
            "status": "paid",
            "amount": Decimal("1.50"),
            "meta": {"channel": "web"},
            "body": UNCHANGED,
            "items": 3,
            "tags": ["a", "b"],
        },
        "before": None,
    }
    templates = Templates()
    expr = lone_expression(source)

    def outcome(render: Any) -> Any:
        try:
            return render(templates.context(names))
        except Exception as exc:
            return type(exc)

    slow = templates.env.from_string(source)
    expected = outcome(lambda ctx: slow.render(names))
    assert outcome(templates.text(source)) == expected
    if expr is not None:
        oracle = templates._expression(expr, _native)
        assert outcome(templates.expression(expr)) == outcome(oracle)


@pytest.mark.parametrize(
    "source",
    [
        "after.status == 'paid'",
        "after.status != 'paid'",
        'after.status == "new"',
        "after.id == 7",
        "after.id != -7",
        "after.body == 'x'",
        "after.body != 'x'",
        "before.status != 'paid'",
        "after.nothing == 1",
        "after.status",
        "after.body",
        "nope == 'x'",
    ],
)
def test_direct_comparisons_match_jinja(source: str) -> None:
    """`when` conditions read directly (a path compared with a literal) give what the
    sandboxed Jinja expression gives, errors included."""
    names = {"after": {"id": 7, "status": "paid", "body": UNCHANGED}, "before": None}
    templates = Templates()

    def outcome(render: Any) -> Any:
        try:
            return render(templates.context(names))
        except Exception as exc:
            return type(exc)

    from task_bridge.templating.sandbox import _condition

    assert outcome(templates.condition(source)) == outcome(
        templates._expression(source, _condition)
    )
