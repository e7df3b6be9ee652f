"""Loading rule files: good files compile, every broken one is reported as `file:line: message`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from task_bridge.errors import RuleError
from task_bridge.rules import RuleSet, load_rules
from task_bridge.yamlsrc import load_yaml_text

ROOT = Path(__file__).resolve().parents[2]


class _Target:
    """A tiny target: Fragment's ops, and one check on the task body."""

    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        problems = [f"task.{key}: unknown task key" for key in task if key.startswith("x_")]
        if isinstance(task.get("fields"), list):
            problems.append("task.fields: must be a mapping")
        if op == "create" and "fields" not in task:
            problems.append("create needs task.fields")
        return problems


TARGETS = {"fragment": _Target(), "hubspot": _Target()}


def _load_dir(tmp_path: Path, files: dict[str, str], spec: str = "rules") -> RuleSet:
    """Write `files` under tmp_path/rules and load `spec` as bridge.yaml beside them would."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "rules" / name).write_text(text)
    return load_rules(
        spec, base_dir=tmp_path, config_file="bridge.yaml", config_doc=None, targets=TARGETS
    )


def _problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    with pytest.raises(RuleError) as err:
        _load_dir(tmp_path, files)
    return err.value.problems


GOOD = """\
rules:
  - name: review-paid-orders
    table: public.orders
    on: [insert, update]
    when: after.status == 'paid'
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}-review"
        task:
          fields: {title: "Review #{{ after.id }}"}
  - name: close-shipped
    table: orders
    on: delete
    actions:
      - {op: close, target: fragment, uid: "order-{{ row.id }}-review"}
"""


def test_good_file_compiles_with_defaults_and_shorthand(tmp_path: Path) -> None:
    """A valid file compiles: `table` gets `public.`, a lone `on` becomes a list, default `on`."""
    ruleset = _load_dir(
        tmp_path,
        {
            "orders.yaml": GOOD,
            "other.yml": "- {name: any, table: 'shop.*', actions: []}\n",
            "notes.txt": "not a rule file",
        },
    )
    assert [r.name for r in ruleset.rules] == ["review-paid-orders", "close-shipped", "any"]
    review, close, anything = ruleset.rules
    assert close.table == "public.orders" and close.ops == frozenset({"delete"})
    assert anything.ops == frozenset({"insert", "update"}) and anything.actions == ()
    assert [(a.index, a.op, a.target) for a in review.actions] == [(0, "upsert", "fragment")]
    assert review.where == "rules/orders.yaml:2"
    assert ruleset.tables() == ["public.orders", "shop.*"]


def test_single_file_and_empty_directory(tmp_path: Path) -> None:
    """`rules:` may name one file; an empty directory or empty file means no rules."""
    assert len(_load_dir(tmp_path, {"orders.yaml": GOOD}, spec="rules/orders.yaml").rules) == 2
    (tmp_path / "empty").mkdir()
    assert _load_dir(tmp_path, {}, spec="empty").rules == []
    blank = _load_dir(tmp_path, {"blank.yaml": "# nothing yet\n"}, spec="rules/blank.yaml")
    assert blank.rules == []


def test_missing_rules_path_names_the_config_line(tmp_path: Path) -> None:
    """A rules path that does not exist is reported at the `rules:` line of bridge.yaml."""
    doc = load_yaml_text("source: {}\nrules: nowhere/\n", "bridge.yaml")
    with pytest.raises(RuleError) as err:
        load_rules(
            "nowhere/", base_dir=tmp_path, config_file="bridge.yaml", config_doc=doc, targets={}
        )
    assert err.value.problems == ["bridge.yaml:2: rules: nowhere does not exist"]


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    """A typo of a key is one problem naming file, line, rule, key path and the likely key."""
    text = GOOD.replace('        uid: "order-{{ after.id }}-review"', '        uidd: "x"')
    assert _problems(tmp_path, {"orders.yaml": text}) == [
        "rules/orders.yaml:9: rule 'review-paid-orders': actions[0].uidd: unknown key"
        " (did you mean 'uid'?)"
    ]


def test_rule_level_typos_missing_keys_and_wrong_types(tmp_path: Path) -> None:
    """Unknown rule keys, missing required keys, wrong types and bad `on` values: one line each."""
    text = """\
rules:
  - name: a
    tabel: public.orders
    actions: []
  - name: b
    table: public.orders
  - name: c
    table: [public.orders]
    on: [insrt]
    actions:
      - {op: upsert, target: fragment, uid: 7}
      - just-a-string
  - name: d
    table: a.b.c
    actions: []
  - [not, a, mapping]
"""
    assert _problems(tmp_path, {"r.yaml": text}) == [
        "rules/r.yaml:3: rule 'a': tabel: unknown key (did you mean 'table'?)",
        "rules/r.yaml:5: rule 'b': actions: required key is missing",
        "rules/r.yaml:8: rule 'c': table: must be a string, got a list",
        "rules/r.yaml:9: rule 'c': on[0]: unknown event op 'insrt' (did you mean 'insert'?);"
        " one of insert, update, delete, snapshot, truncate, completed",
        "rules/r.yaml:11: rule 'c': actions[0].uid: must be a string, got a number",
        "rules/r.yaml:12: rule 'c': actions[1]: must be a mapping, got a string",
        "rules/r.yaml:14: rule 'd': table: use schema.table (e.g. public.orders);"
        " a glob is allowed (public.*)",
        "rules/r.yaml:16: a rule must be a mapping (name, table, actions), got a list",
    ]


def test_unknown_target_and_unsupported_op(tmp_path: Path) -> None:
    """An unknown target suggests the closest name; an op the target lacks lists what it has."""
    text = """\
rules:
  - name: t
    table: orders
    actions:
      - {op: upsert, target: fragmnet, uid: x}
      - {op: explode, target: fragment, uid: x}
      - {op: upsret, target: fragment, uid: x}
"""
    assert _problems(tmp_path, {"t.yaml": text}) == [
        "rules/t.yaml:5: rule 't': actions[0].target: unknown target 'fragmnet'"
        " (did you mean 'fragment'?); known: fragment, hubspot",
        "rules/t.yaml:6: rule 't': actions[1].op: target 'fragment' does not support op"
        " 'explode' (supported: close, create, update, upsert)",
        "rules/t.yaml:7: rule 't': actions[2].op: target 'fragment' does not support op"
        " 'upsret' (did you mean 'upsert'?) (supported: close, create, update, upsert)",
    ]


def test_target_check_action_problems_point_at_their_key(tmp_path: Path) -> None:
    """The target's own checks land on the line of the key they name (or the action)."""
    text = """\
rules:
  - name: t
    table: orders
    actions:
      - op: upsert
        target: fragment
        uid: x
        task:
          fields: [1, 2]
          x_colour: red
      - {op: create, target: fragment, uid: y}
"""
    assert _problems(tmp_path, {"t.yaml": text}) == [
        "rules/t.yaml:10: rule 't': actions[0].task.x_colour: unknown task key",
        "rules/t.yaml:9: rule 't': actions[0].task.fields: must be a mapping",
        "rules/t.yaml:11: rule 't': actions[1]: create needs task.fields",
    ]


def test_template_syntax_errors_name_their_key(tmp_path: Path) -> None:
    """Broken uid, when, task strings (also in lists and block scalars) report their own line."""
    text = """\
rules:
  - name: tpl
    table: orders
    when: after.status ==
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id "
        when: "{{ after.ok }}"
        task:
          fields:
            ok: "{{ after.id }}"
            bad: "{% if after.x %}yes"
            list: ["fine", "{{ after.id + }}"]
            long: |
              line one {{ after.id }}
              line two {{ after.id ) }}
"""
    assert _problems(tmp_path, {"tpl.yaml": text}) == [
        "rules/tpl.yaml:4: rule 'tpl': when: template syntax error: unexpected 'end of template'",
        "rules/tpl.yaml:8: rule 'tpl': actions[0].uid: template syntax error: unexpected end"
        " of template, expected 'end of print statement'.",
        "rules/tpl.yaml:9: rule 'tpl': actions[0].when: must be a Jinja expression"
        " without braces, e.g. `after.status == 'paid'`",
        "rules/tpl.yaml:13: rule 'tpl': actions[0].task.fields.bad: template syntax error:"
        " Unexpected end of template. Jinja was looking for the following tags: 'elif' or"
        " 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        "rules/tpl.yaml:14: rule 'tpl': actions[0].task.fields.list[1]: template syntax error:"
        " unexpected 'end of template'",
        "rules/tpl.yaml:17: rule 'tpl': actions[0].task.fields.long: template syntax error:"
        " unexpected ')'",
    ]


def test_yaml_syntax_and_top_level_errors_do_not_hide_other_files(tmp_path: Path) -> None:
    """A YAML syntax error, a top-level typo and a non-list `rules` are reported per file."""
    problems = _problems(
        tmp_path,
        {
            "a.yaml": "rules:\n  - name: broken\n    table: [public.orders\n",
            "b.yaml": "rulez:\n  - {name: x, table: t, actions: []}\n",
            "c.yaml": "rules: {name: x}\n",
            "d.yaml": GOOD.replace("uid:", "uidd:", 1),
        },
    )
    assert problems == [
        "rules/a.yaml:4: YAML syntax error: expected ',' or ']', but got '<stream end>'",
        "rules/b.yaml:1: rulez: unknown top-level key (did you mean 'rules'?);"
        " a rule file holds a 'rules:' list",
        "rules/c.yaml:1: rules: must be a list of rules",
        "rules/d.yaml:9: rule 'review-paid-orders': actions[0].uidd: unknown key"
        " (did you mean 'uid'?)",
    ]


def test_duplicate_rule_names_across_files_name_both_places(tmp_path: Path) -> None:
    """The second definition of a name is an error that also names the first one's file:line."""
    one = "rules:\n  - name: twice\n    table: orders\n    actions: []\n"
    two = (
        "- {name: other, table: orders, actions: []}\n- {name: twice, table: orders, actions: []}\n"
    )
    assert _problems(tmp_path, {"one.yaml": one, "two.yaml": two}) == [
        "rules/two.yaml:2: name: duplicate rule name 'twice' (first defined at rules/one.yaml:2)"
    ]


def test_blank_name_and_empty_on_are_rejected(tmp_path: Path) -> None:
    """Rule names must be non-blank and `on` must list at least one op."""
    text = (
        "- {name: ' ', table: orders, actions: []}\n"
        "- {name: n, table: orders, on: [], actions: []}\n"
    )
    assert _problems(tmp_path, {"r.yaml": text}) == [
        "rules/r.yaml:1: rule ' ': name: must not be blank",
        "rules/r.yaml:2: rule 'n': on: must not be empty",
    ]


def test_inline_rules_take_lines_from_bridge_yaml() -> None:
    """An inline `rules:` list in bridge.yaml loads, and its problems point into bridge.yaml."""
    text = """\
targets: {}
rules:
  - name: inline
    table: orders
    actions:
      - {op: close, target: fragment, uid: "o-{{ row.id }}"}
  - name: broken
    table: orders
    actions:
      - {op: close, target: fragment, uid: "o-{{ row.id }}", task: {x_y: 1}}
"""
    doc = load_yaml_text(text, "conf/bridge.yaml")
    with pytest.raises(RuleError) as err:
        load_rules(
            doc.data["rules"],
            base_dir=Path("conf"),
            config_file="conf/bridge.yaml",
            config_doc=doc,
            targets=TARGETS,
        )
    assert err.value.problems == [
        "conf/bridge.yaml:10: rule 'broken': actions[0].task.x_y: unknown task key"
    ]
    good = load_rules(
        doc.data["rules"][:1],
        base_dir=Path("conf"),
        config_file="conf/bridge.yaml",
        config_doc=doc,
        targets=TARGETS,
    )
    assert [r.name for r in good.rules] == ["inline"]
    assert good.rules[0].where == "conf/bridge.yaml:3"


def test_error_message_summarises_all_problems(tmp_path: Path) -> None:
    """RuleError's message is the first problem plus how many more there are."""
    text = "- {name: a, tabel: x, actions: []}\n- {name: b, tabel: x, actions: []}\n"
    with pytest.raises(RuleError) as err:
        _load_dir(tmp_path, {"r.yaml": text})
    assert str(err.value) == (
        "rules/r.yaml:1: rule 'a': tabel: unknown key (did you mean 'table'?) (and 1 more)"
    )
