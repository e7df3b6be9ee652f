"""Chains: validation of step references, deferred ops from the engine, send-time rendering."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest

from task_bridge.errors import TemplateError
from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.jsonenc import JsonNumber, dumps_payload, loads_payload
from task_bridge.operations import StepResult
from task_bridge.rules import RuleEngine
from task_bridge.rules.chains import ChainRenderer, decode_event, encode_event
from tests.unit.test_rules_loader import _load_dir, _problems

CHAIN = """\
rules:
  - name: chain
    table: public.orders
    actions:
      - {id: first, op: upsert, target: fragment, uid: "a-{{ after.id }}"}
      - id: second
        op: upsert
        target: fragment
        uid: "b-{{ after.id }}"
        when: steps.first.ok
        task: {fields: {parent: "{{ steps.first.response.uid }}", n: "{{ after.n }}"}}
      - {op: close, target: fragment, uid: "a-{{ after.id }}", on_error: stop}
"""

EVENT = ChangeEvent(
    op="insert",
    schema="public",
    table="orders",
    position=SourcePosition(kind="postgres", lsn=0x10, index=2),
    after={
        "id": 7,
        "n": Decimal("1.50"),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "d": date(2026, 1, 2),
        "ref": UUID(int=5),
        "toast": UNCHANGED,
        "tags": ["x", None],
        "meta": {"$t": "not a tag", "k": [1, 2.5]},
        "raw": b"\x00\xff",
        "span": timedelta(days=1, microseconds=3),
    },
    key={"id": 7},
    commit_time=datetime(2026, 1, 2, tzinfo=UTC),
    txid=99,
)


def test_events_round_trip_losslessly() -> None:
    """A deferred op's stored event decodes to an equal ChangeEvent, types and UNCHANGED kept."""
    decoded = decode_event(encode_event(EVENT))
    assert decoded == EVENT
    assert decoded.after is not None and decoded.after["toast"] is UNCHANGED


def test_values_json_has_no_form_for_round_trip_through_the_outbox_text() -> None:
    """NaN, infinities, numbers past a float, integers past 64 bits and a time with a zone
    come back as the same values after the stored JSON text is read again."""
    zone = timezone(timedelta(hours=-3))
    after = {
        "nan": math.nan,
        "inf": math.inf,
        "neg": -math.inf,
        "huge": JsonNumber("1e400"),
        "big": 2**100,
        "tz": time(1, 2, 3, tzinfo=zone),
        "doc": {"x": [JsonNumber("-1e-400"), 1.5]},
    }
    event = dataclasses.replace(EVENT, after=after)
    decoded = decode_event(loads_payload(dumps_payload(encode_event(event))))
    assert decoded.after is not None and math.isnan(decoded.after.pop("nan"))
    assert decoded.after == {k: v for k, v in after.items() if k != "nan"}
    assert isinstance(decoded.after["huge"], JsonNumber)
    assert isinstance(decoded.after["doc"]["x"][0], JsonNumber)


def test_engine_chains_the_actions_and_defers_the_ones_reading_steps(tmp_path: Path) -> None:
    """The three ops share a chain key; only the one reading steps.* is stored unrendered."""
    ops = RuleEngine(_load_dir(tmp_path, {"r.yaml": CHAIN})).evaluate(EVENT)
    assert [op.step_id for op in ops] == ["first", "second", None]
    assert len({op.chain for op in ops}) == 1 and ops[0].chain is not None
    assert [op.deferred is not None for op in ops] == [False, True, False]
    assert [op.on_error for op in ops] == ["retry", "retry", "stop"]
    assert ops[1].uid == "b-7"


def test_deferred_ops_render_with_the_results_of_earlier_steps(tmp_path: Path) -> None:
    """`when` and the task see steps.<id>; a false `when` skips; a failing template raises."""
    ops = RuleEngine(_load_dir(tmp_path, {"r.yaml": CHAIN})).evaluate(EVENT)
    renderer = ChainRenderer()
    ok = {"first": StepResult(ok=True, status=200, response={"uid": "u-1"})}
    deferred = ops[1].deferred
    assert deferred is not None and ops[1].payload == {}
    assert renderer.render(deferred, ok) == {"fields": {"parent": "u-1", "n": Decimal("1.50")}}
    failed = {"first": StepResult(ok=False, status=400, response=None)}
    assert renderer.render(deferred, failed) is None
    assert renderer.render(deferred, {}) is None  # step never ran: not ok
    broken = {"first": StepResult(ok=True, status=200, response=None)}
    with pytest.raises(TemplateError, match="task"):
        renderer.render(deferred, broken)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            '{op: close, target: fragment, uid: "a", when: steps.frist.ok}',
            "steps.frist: no earlier action of this rule has id 'frist' (did you mean 'first'?)",
        ),
        (
            '{op: close, target: fragment, uid: "{{ steps.first.response.id }}"}',
            "uid cannot use steps.*",
        ),
        ("{id: first, op: close, target: fragment, uid: a}", "duplicate step id 'first'"),
        ("{id: 2x, op: close, target: fragment, uid: a}", "id: must be a name of letters"),
        (
            "{op: close, target: fragment, uid: a, on_error: stpo}",
            "on_error: unknown value 'stpo' (did you mean 'stop'?); one of stop, skip, retry",
        ),
    ],
)
def test_bad_step_references_are_reported_with_their_line(
    tmp_path: Path, action: str, expected: str
) -> None:
    """Unknown or later step ids, steps.* in a uid, duplicate or malformed ids are errors."""
    text = (
        "rules:\n  - name: r\n    table: orders\n    actions:\n"
        "      - {id: first, op: upsert, target: fragment, uid: a}\n"
        f"      - {action}\n"
    )
    problems = _problems(tmp_path, {"r.yaml": text})
    assert len(problems) == 1, problems
    assert problems[0].startswith("rules/r.yaml:6: rule 'r': actions[1]."), problems
    assert expected in problems[0]
