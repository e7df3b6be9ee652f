"""Rule files -> compiled rules, with every problem reported as `file:line: message`."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jinja2 import TemplateSyntaxError
from pydantic import ValidationError

from bridge.errors import RuleError
from bridge.rules.schema import ActionModel, RuleModel
from bridge.rules.templates import Renderer, Templates
from bridge.yamlsrc import (
    KeyPath,
    YamlDoc,
    YamlSyntaxError,
    did_you_mean,
    format_path,
    load_yaml_file,
)


class TargetSpec(Protocol):
    supported_ops: frozenset[str]

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]: ...


@dataclass(frozen=True)
class CompiledAction:
    index: int
    op: str
    target: str
    uid: Renderer
    task: Renderer | None
    when: Renderer | None


@dataclass(frozen=True)
class CompiledRule:
    name: str
    table: str
    ops: frozenset[str]
    when: Renderer | None
    actions: tuple[CompiledAction, ...]
    model: RuleModel
    where: str

    def matches_table(self, qualified: str) -> bool:
        return fnmatch.fnmatchcase(qualified, self.table)


@dataclass
class RuleSet:
    rules: list[CompiledRule] = field(default_factory=list)
    templates: Templates = field(default_factory=Templates)

    def tables(self) -> list[str]:
        """The table patterns the rules name (for the publication), sorted, unique."""
        return sorted({rule.table for rule in self.rules})


@dataclass(frozen=True)
class _Entry:
    doc: YamlDoc
    prefix: KeyPath
    raw: Any


class _Problems(list[str]):
    def add(self, entry: _Entry, path: KeyPath, message: str, rule: str | None = None) -> None:
        where = entry.doc.where((*entry.prefix, *path))
        label = f"rule '{rule}': " if rule else ""
        key = f"{format_path(path)}: " if path else ""
        self.append(f"{where}: {label}{key}{message}")


def _entries(
    spec: str | list[Any],
    base_dir: Path,
    config_file: str,
    config_doc: YamlDoc | None,
    problems: _Problems,
) -> Iterator[_Entry]:
    if isinstance(spec, list):
        doc = config_doc or YamlDoc(config_file, None, {})
        for i, raw in enumerate(spec):
            yield _Entry(doc, ("rules", i), raw)
        return
    path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        line = config_doc.line_of(("rules",)) if config_doc else 1
        problems.append(f"{config_file}:{line}: rules: {path} does not exist")
        return
    for file in files:
        try:
            doc = load_yaml_file(file)
        except YamlSyntaxError as exc:
            problems.append(str(exc))
            continue
        data = doc.data
        if data is None:
            continue
        if isinstance(data, dict) and set(data) == {"rules"} and isinstance(data["rules"], list):
            for i, raw in enumerate(data["rules"]):
                yield _Entry(doc, ("rules", i), raw)
        elif isinstance(data, list):
            for i, raw in enumerate(data):
                yield _Entry(doc, (i,), raw)
        else:
            extra = sorted(set(data) - {"rules"}) if isinstance(data, dict) else []
            hint = (
                f" (unknown top-level key '{extra[0]}'{did_you_mean(extra[0], ['rules'])})"
                if extra
                else ""
            )
            problems.append(f"{doc.file}:1: a rule file holds a top-level 'rules:' list{hint}")


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    return list(ActionModel.model_fields if "actions" in loc else RuleModel.model_fields)


def _validation_problems(
    entry: _Entry, exc: ValidationError, rule: str | None, problems: _Problems
) -> None:
    errors = [(tuple(p for p in e["loc"] if isinstance(p, str | int)), e) for e in exc.errors()]
    # an unknown key that is a typo of a missing one is reported once, as the typo
    suggested = {
        (loc[:-1], m[0])
        for loc, e in errors
        if e["type"] == "extra_forbidden"
        for m in [difflib.get_close_matches(str(loc[-1]), _known_keys(loc[:-1]), 1, 0.6)]
        if m
    }
    for loc, err in errors:
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            message = f"unknown key{did_you_mean(key, _known_keys(loc[:-1]))}"
        elif err["type"] == "missing":
            if (loc[:-1], loc[-1]) in suggested:
                continue
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.add(entry, loc, message, rule)


def _compile(
    templates: Templates,
    entry: _Entry,
    path: KeyPath,
    source: str,
    rule: str,
    problems: _Problems,
    *,
    expression: bool = False,
) -> Renderer | None:
    try:
        return templates.expression(source) if expression else templates.string(source)
    except TemplateSyntaxError as exc:
        problems.add(entry, path, f"template error: {exc.message}", rule)
        return None


def _compile_task(
    templates: Templates, entry: _Entry, path: KeyPath, value: Any, rule: str, problems: _Problems
) -> None:
    """Syntax-check every string of a task body, so each error names its own key."""
    if isinstance(value, str):
        _compile(templates, entry, path, value, rule, problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            _compile_task(templates, entry, (*path, key), item, rule, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _compile_task(templates, entry, (*path, i), item, rule, problems)


def _compile_rule(
    entry: _Entry,
    model: RuleModel,
    templates: Templates,
    targets: Mapping[str, TargetSpec],
    problems: _Problems,
) -> CompiledRule | None:
    name = model.name
    before = len(problems)
    when = (
        _compile(templates, entry, ("when",), model.when, name, problems, expression=True)
        if model.when
        else None
    )
    actions: list[CompiledAction] = []
    for i, action in enumerate(model.actions):
        path: KeyPath = ("actions", i)
        target = targets.get(action.target)
        if target is None:
            problems.add(
                entry,
                (*path, "target"),
                f"unknown target '{action.target}'{did_you_mean(action.target, targets)}",
                name,
            )
        elif action.op not in target.supported_ops:
            problems.add(
                entry,
                (*path, "op"),
                f"target '{action.target}' does not support op "
                f"'{action.op}' (supported: {', '.join(sorted(target.supported_ops))})",
                name,
            )
        elif action.task is not None:
            for message in target.check_action(action.op, action.task):
                problems.add(
                    entry, (*path, message.split(":", 1)[0]), message.split(": ", 1)[-1], name
                )
        uid = _compile(templates, entry, (*path, "uid"), action.uid, name, problems)
        action_when = (
            _compile(
                templates, entry, (*path, "when"), action.when, name, problems, expression=True
            )
            if action.when
            else None
        )
        task = None
        if action.task is not None:
            _compile_task(templates, entry, (*path, "task"), action.task, name, problems)
            task = templates.value(action.task) if len(problems) == before else None
        if uid is not None:
            actions.append(CompiledAction(i, action.op, action.target, uid, task, action_when))
    if len(problems) != before:
        return None
    return CompiledRule(
        name,
        model.table,
        frozenset(model.on),
        when,
        tuple(actions),
        model,
        entry.doc.where(entry.prefix),
    )


def load_rules(
    spec: str | list[Any],
    *,
    base_dir: Path,
    config_file: str,
    config_doc: YamlDoc | None,
    targets: Mapping[str, TargetSpec],
) -> RuleSet:
    """Load, validate and compile rules; raise RuleError listing every problem."""
    problems = _Problems()
    ruleset = RuleSet()
    seen: dict[str, str] = {}
    for entry in _entries(spec, base_dir, config_file, config_doc, problems):
        raw_name = entry.raw.get("name") if isinstance(entry.raw, dict) else None
        name = raw_name if isinstance(raw_name, str) else None
        if not isinstance(entry.raw, dict):
            problems.add(entry, (), "a rule must be a mapping with name, table, actions")
            continue
        try:
            model = RuleModel.model_validate(entry.raw)
        except ValidationError as exc:
            _validation_problems(entry, exc, name, problems)
            continue
        if model.name in seen:
            problems.add(
                entry,
                (),
                f"duplicate rule name '{model.name}' (first defined at {seen[model.name]})",
            )
            continue
        seen[model.name] = entry.doc.where(entry.prefix)
        compiled = _compile_rule(entry, model, ruleset.templates, targets, problems)
        if compiled is not None:
            ruleset.rules.append(compiled)
    if problems:
        raise RuleError(problems[0], list(problems))
    return ruleset
