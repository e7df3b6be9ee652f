"""Bounded rules (G11): a rule that would take memory, CPU or a huge payload dead-letters its
one operation with the reason, quickly and in bounded memory; the other rules go on."""

from __future__ import annotations

import resource
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from task_bridge.errors import RuleError
from task_bridge.events import ChangeEvent, SourcePosition
from task_bridge.rules import RuleEngine, load_rules
from task_bridge.templating.budget import RenderBudget
from task_bridge.yamlsrc import load_yaml_text


class _Target:
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        return []


def _rules(*tasks: str) -> str:
    text = "rules:\n"
    for i, task in enumerate(tasks):
        text += f"""  - name: r{i}
    table: public.orders
    on: [insert]
    actions:
      - {{op: upsert, target: fragment, uid: "o-{{{{ after.id }}}}", task: {task}}}
"""
    return text


def _engine(text: str, budget: RenderBudget | None = None) -> RuleEngine:
    doc = load_yaml_text(text, "bridge.yaml")
    ruleset = load_rules(
        doc.data["rules"],
        base_dir=Path("."),
        config_file="bridge.yaml",
        config_doc=doc,
        targets={"fragment": _Target()},
        budget=budget,
    )
    return RuleEngine(ruleset)


def _insert(after: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent(
        "insert", "public", "orders", SourcePosition("postgres", lsn=1), after=after, key={}
    )


CANARY = '{fields: {title: "order {{ after.id }}"}}'
BOMBS = {
    "memory": '{fields: {x: "{{ after.v * 10**9 }}"}}',
    "integer": '{fields: {x: "{{ after.n ** (after.n * 10**8) }}"}}',
    "cpu": (
        '{fields: {x: "{% for i in range(100000) %}{% for j in range(100000) %}'
        '{% endfor %}{% endfor %}"}}'
    ),
    "payload": '{fields: {x: "{% for i in range(2000) %}{{ after.v * 1000 }}{% endfor %}"}}',
    "fields": "{fields: {"
    + ", ".join(f'f{i}: "{{{{ after.v * 900000 }}}}"' for i in range(3))
    + "}}",
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_rule_over_its_budget_dead_letters_one_op_and_the_canary_goes_on(bomb: str) -> None:
    """Each bomb costs its op (dead, reason naming the limit), fast and without allocating
    what it asked for; the canary rule beside it renders normally."""
    engine = _engine(_rules(BOMBS[bomb], CANARY))
    tracemalloc.start()
    started = time.process_time()
    try:
        ops = engine.evaluate(_insert({"id": 7, "v": "x", "n": 9}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dead, canary = ops
    assert dead.error is not None and "limit" in dead.error, dead.error
    assert canary.error is None and canary.payload == {"fields": {"title": "order 7"}}
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    # CPU, not wall time: the step budget stops the loops (no bound on machine speed here)
    assert time.process_time() - started < 60


def test_the_budget_is_per_event() -> None:
    """A rule near its step budget passes event after event: each event starts afresh."""
    engine = _engine(
        _rules('{fields: {x: "{% for i in range(60) %}.{% endfor %}"}}'),
        RenderBudget(max_steps=200),
    )
    for n in range(20):
        (op,) = engine.evaluate(_insert({"id": n}))
        assert op.error is None and op.payload == {"fields": {"x": "." * 60}}


def test_limits_come_from_the_config(tmp_path: Path) -> None:
    """`limits.payload_bytes` of 2000: a 3000-character field dead-letters, 1000 passes."""
    engine = _engine(
        _rules('{fields: {x: "{{ after.v * after.n }}"}}'), RenderBudget(max_chars=2000)
    )
    (small,) = engine.evaluate(_insert({"id": 1, "v": "x", "n": 1000}))
    (big,) = engine.evaluate(_insert({"id": 2, "v": "x", "n": 3000}))
    assert small.error is None and big.error is not None and "2000" in big.error


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("(" * 5000 + "after.id" + ")" * 5000, "nested too deeply"),
        ("[" * 3000 + "1" + "]" * 3000, "nested too deeply"),
        ("after.id" + "|string" * 3000, "nested too deeply"),
        ("'a' * 10**9", "over the limit"),
        ("2 ** (10 ** 9)", "bits"),
    ],
)
def test_validate_reports_deep_and_oversized_templates_at_their_line(
    expr: str, message: str
) -> None:
    """Deep nesting and oversized constants are file:line problems, found in bounded time
    and memory (no RecursionError, no constant folded at compile time)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RuleError) as caught:
        _engine(_rules(CANARY, f'{{fields: {{x: "{{{{ {expr} }}}}"}}}}'))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    (problem,) = caught.value.problems
    assert problem.startswith("bridge.yaml:") and "rule 'r1'" in problem, problem
    assert message in problem, problem
    assert grown_mb < 200, f"validation grew the process by {grown_mb:.0f} MB"
