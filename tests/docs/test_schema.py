"""The JSON Schemas of bridge.yaml and rule files (`task-bridge schema`, shipped in schema/):
valid schemas, up to date, accepting every shipped example and refusing typo'd keys."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from task_bridge.cli import main
from task_bridge.schemas import SCHEMA_FILES, schema_for
from task_bridge.yamlsrc import load_yaml_file

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(["schema", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator = Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("kind", list(SCHEMA_FILES))
def test_shipped_schema_is_what_the_command_prints(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """schema/<file> equals `task-bridge schema <kind>` (regenerate: python -m task_bridge.docgen),
    and is a valid draft 2020-12 schema."""
    printed = _printed(capsys, kind)
    Draft202012Validator.check_schema(printed)
    shipped = json.loads((ROOT / "schema" / SCHEMA_FILES[kind]).read_text(encoding="utf-8"))
    assert shipped == printed, "stale: run `python -m task_bridge.docgen`"


def test_schema_without_kind_prints_both(capsys: pytest.CaptureFixture[str]) -> None:
    """`task-bridge schema` alone prints both schemas, keyed config and rules."""
    assert set(_printed(capsys)) == {"config", "rules"}


def test_example_config_validates_and_a_typo_is_refused() -> None:
    """bridge.example.yaml passes the config schema; a misspelt key, anywhere, does not."""
    schema = schema_for("config")
    example = load_yaml_file(ROOT / "bridge.example.yaml").data
    assert _errors(schema, example) == []
    for section, typo in (
        ("delivery", "concurency"),
        ("outbox", "retension"),
        (None, "limit"),
    ):
        broken = copy.deepcopy(example)
        (broken[section] if section else broken)[typo] = 1
        assert any(typo in error for error in _errors(schema, broken)), typo
    broken = copy.deepcopy(example)
    broken["targets"]["fragment"]["tokn"] = "x"
    assert _errors(schema, broken), "a typo in a target is refused"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_example_rule_file_validates_and_a_typo_is_refused(rule_file: Path) -> None:
    """Each shipped rule file passes the rules schema; `wen:` for `when:` is refused."""
    schema = schema_for("rules")
    rules = load_yaml_file(rule_file).data
    assert _errors(schema, rules) == []
    broken = copy.deepcopy(rules)
    broken["rules"][0]["wen"] = "true"
    assert _errors(schema, broken)
    broken = copy.deepcopy(rules)
    broken["rules"][0]["actions"][0]["targt"] = "x"
    assert _errors(schema, broken)


def test_durations_and_rates_are_patterned_strings() -> None:
    """A duration is `10s` (or a number of seconds, or a ${VAR}), never `ten seconds`; a rate is
    `60/min`, never a bare number."""
    schema = schema_for("config")
    base = {"source": {"postgres": {"dsn": "postgresql://x"}}}
    for good in ("10s", "500ms", 5, "${TIMEOUT:-10s}"):
        assert _errors(schema, {**base, "delivery": {"timeout": good}}) == [], good
    for bad in ("ten seconds", "10 sec", -1):
        assert _errors(schema, {**base, "delivery": {"timeout": bad}}), bad
    target = {"kind": "fragment", "token": "t"}
    assert _errors(schema, {**base, "targets": {"f": {**target, "rate_limit": "60/min"}}}) == []
    assert _errors(schema, {**base, "targets": {"f": {**target, "rate_limit": 60}}})


def test_inline_rules_are_checked_like_rule_files() -> None:
    """`rules:` inline in bridge.yaml is checked against the rule schema."""
    schema = schema_for("config")
    base = {"source": {"postgres": {"dsn": "postgresql://x"}}}
    action = {"op": "close", "target": "f", "uid": "u"}
    rule = {"name": "r", "table": "public.t", "actions": [action]}
    assert _errors(schema, {**base, "rules": [rule]}) == []
    assert _errors(schema, {**base, "rules": [{**rule, "tabel": "x"}]})
