"""Rule files -> compiled rules, with every problem reported as `file:line: message`.

`load_rules` reads every file (or the inline list in bridge.yaml), validates each rule against
`schema`, checks targets and ops, compiles every template, and raises one `RuleError` listing
every problem found, each naming file, line, rule and key path.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_args

from jinja2 import TemplateSyntaxError
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from task_bridge.errors import RuleError
from task_bridge.rules.chains import step_problems
from task_bridge.rules.schema import Action, EventOp, OnError, Rule
from task_bridge.templating.budget import RenderBudget
from task_bridge.templating.sandbox import Renderer, Templates
from task_bridge.yamlsrc import (
    KeyPath,
    YamlDoc,
    YamlSyntaxError,
    did_you_mean,
    format_path,
    load_yaml_file,
)

RULE_FILE_SUFFIXES = (".yaml", ".yml")
EVENT_OPS: tuple[str, ...] = get_args(EventOp)
_KEY_PATH = re.compile(r"^[A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*$")
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([\w-]+)")


class TargetSpec(Protocol):
    """What the loader needs of a target: its config model fits (`targets.http.
    TargetConfigBase`: no network, no event loop). An `unsupported_note` attribute, if
    present, is said after "does not support op"."""

    @property
    def supported_ops(self) -> frozenset[str]: ...

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        """Problems as `task.key: message` (key path relative to the action), or plain text."""
        ...


@dataclass(frozen=True)
class CompiledAction:
    index: int
    op: str
    target: str
    uid: Renderer
    task: Renderer | None
    when: Renderer | None
    model: Action | None = None
    deferred: bool = False
    """`when`/`task` read `steps.*`: rendered at send time (`task_bridge.rules.chains`)."""
    earlier_steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class CompiledRule:
    name: str
    table: str
    ops: frozenset[str]
    when: Renderer | None
    actions: tuple[CompiledAction, ...]
    model: Rule
    where: str  # `file:line` of the rule, for later messages (validate --check-source)

    @property
    def chained(self) -> bool:
        """Several actions run one after another for each event."""
        return len(self.actions) > 1

    def matches_table(self, qualified: str) -> bool:
        return fnmatch.fnmatchcase(qualified, self.table)


@dataclass
class RuleSet:
    """Compiled rules, in file order, and the template environment they were compiled in."""

    rules: list[CompiledRule] = field(default_factory=list)
    templates: Templates = field(default_factory=Templates)

    def tables(self) -> list[str]:
        """The table patterns the rules name (for the publication), sorted, unique."""
        return sorted({rule.table for rule in self.rules})


@dataclass(frozen=True)
class _Entry:
    """One raw rule and where it sits: its document and key path inside it."""

    doc: YamlDoc
    prefix: KeyPath
    raw: Any


class _Problems(list[str]):
    def add(
        self,
        entry: _Entry,
        path: KeyPath,
        message: str,
        rule: str | None = None,
        line_offset: int = 0,
    ) -> None:
        line = entry.doc.line_of((*entry.prefix, *path)) + line_offset
        label = f"rule '{rule}': " if rule else ""
        key = f"{format_path(path)}: " if path else ""
        self.append(f"{entry.doc.file}:{line}: {label}{key}{message}")


def _shown(spec: str, config_file: str) -> str:
    """How to name the rules path in messages: as the user would, beside bridge.yaml."""
    if os.path.isabs(spec):
        return os.path.normpath(spec)
    return os.path.normpath(os.path.join(os.path.dirname(config_file), spec))


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
    shown = _shown(spec, config_file)
    if path.is_dir():
        names = sorted(
            p.name for p in path.iterdir() if p.suffix in RULE_FILE_SUFFIXES and p.is_file()
        )
        files = [(path / name, os.path.join(shown, name)) for name in names]
    elif path.is_file():
        files = [(path, shown)]
    else:
        line = config_doc.line_of(("rules",)) if config_doc else 1
        problems.append(f"{config_file}:{line}: rules: {shown} does not exist")
        return
    for file, name in files:
        try:
            loaded = load_yaml_file(file)
        except YamlSyntaxError as exc:
            problems.append(f"{name}:{exc.line}: {exc.message}")
            continue
        yield from _file_entries(YamlDoc(name, loaded.data, loaded.lines), problems)


def _file_entries(doc: YamlDoc, problems: _Problems) -> Iterator[_Entry]:
    """A file holds `rules: [...]` or a bare list of rules; empty files hold none."""
    data = doc.data
    if data is None:
        return
    if isinstance(data, list):
        for i, raw in enumerate(data):
            yield _Entry(doc, (i,), raw)
        return
    if not isinstance(data, dict):
        problems.append(f"{doc.file}:1: a rule file holds a top-level 'rules:' list")
        return
    for key in data:
        if key != "rules":
            problems.append(
                f"{doc.where((key,))}: {key}: unknown top-level key"
                f"{did_you_mean(str(key), ['rules'])}; a rule file holds a 'rules:' list"
            )
    rules = data.get("rules")
    if rules is None:
        return
    if not isinstance(rules, list):
        problems.append(f"{doc.where(('rules',))}: rules: must be a list of rules")
        return
    for i, raw in enumerate(rules):
        yield _Entry(doc, ("rules", i), raw)


def _known_keys(loc: KeyPath) -> list[str]:
    return list(Action.model_fields if "actions" in loc else Rule.model_fields)


_YAML_TYPES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


def _got(value: Any) -> str:
    return f"got {_YAML_TYPES.get(type(value), type(value).__name__)}"


def _message(loc: KeyPath, err: ErrorDetails) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key{did_you_mean(str(loc[-1]), _known_keys(loc[:-1]))}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        on_error = bool(loc) and loc[-1] == "on_error"
        expected = list(get_args(OnError)) if on_error else list(EVENT_OPS)
        what = "value" if on_error else "event op"
        hint = did_you_mean(value, expected) if isinstance(value, str) else ""
        return f"unknown {what} {value!r}{hint}; one of {', '.join(expected)}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "id":
        return "must be a name of letters, digits and _ (not starting with a digit)"
    if kind in ("string_too_short", "too_short"):
        return "must not be empty"
    if kind == "string_type":
        return f"must be a string, {_got(value)}"
    if kind == "list_type":
        return f"must be a list, {_got(value)}"
    if kind in ("dict_type", "model_type"):
        return f"must be a mapping, {_got(value)}"
    return err["msg"].removeprefix("Value error, ")


def _validation_problems(
    entry: _Entry, exc: ValidationError, rule: str | None, problems: _Problems
) -> None:
    errors = [(tuple(p for p in e["loc"] if isinstance(p, str | int)), e) for e in exc.errors()]
    # a missing key with a typo of it present is reported once, as the typo
    typos = {
        (loc[:-1], suggestion)
        for loc, err in errors
        if err["type"] == "extra_forbidden"
        for suggestion in _known_keys(loc[:-1])
        if did_you_mean(str(loc[-1]), [suggestion])
    }
    for loc, err in errors:
        if err["type"] == "missing" and (loc[:-1], loc[-1]) in typos:
            continue
        problems.add(entry, loc, _message(loc, err), rule)


TOO_DEEP = "a template nested too deeply (or too big) to compile: split it up"


@dataclass
class _Compiler:
    """Compiles one rule's templates, recording syntax errors at the line of their key."""

    templates: Templates
    entry: _Entry
    rule: str
    problems: _Problems

    def _guard(
        self, path: KeyPath, compile_: Callable[[str], Renderer], source: str
    ) -> Renderer | None:
        try:
            renderer = compile_(source)
        except TemplateSyntaxError as exc:
            # a block scalar's template starts on the line after its key
            offset = (exc.lineno or 1) - 1 + (1 if "\n" in source.rstrip("\n") else 0)
            self.problems.add(
                self.entry, path, f"template syntax error: {exc.message}", self.rule, offset
            )
            return None
        except (RecursionError, MemoryError):
            self.problems.add(self.entry, path, TOO_DEEP, self.rule)
            return None
        oversized = self.templates.oversized_constant(source)
        if oversized is not None:
            self.problems.add(self.entry, path, f"template: {oversized}", self.rule)
            return None
        return renderer

    def condition(self, path: KeyPath, source: str) -> Renderer | None:
        if any(marker in source for marker in ("{{", "{%")):
            self.problems.add(
                self.entry,
                path,
                "must be a Jinja expression without braces, e.g. `after.status == 'paid'`",
                self.rule,
            )
            return None
        return self._guard(path, self.templates.condition, source)

    def uid(self, path: KeyPath, source: str) -> Renderer | None:
        return self._guard(path, self.templates.uid, source)

    def task(self, path: KeyPath, value: Any) -> bool:
        """Syntax-check every string of a task body, so each error names its own key."""
        if isinstance(value, str):
            return self._guard(path, self.templates.string, value) is not None
        if isinstance(value, dict):
            results = [self.task((*path, key), item) for key, item in value.items()]
            return all(results)
        if isinstance(value, list):
            return all([self.task((*path, i), item) for i, item in enumerate(value)])
        return True


def _split_check(message: str) -> tuple[KeyPath, str]:
    """`task.fields.x: must be ...` -> (("task", "fields", "x"), "must be ...")."""
    head, sep, rest = message.partition(": ")
    if not sep or not _KEY_PATH.match(head):
        return (), message
    path: KeyPath = tuple(int(index) if index else name for index, name in _PATH_PART.findall(head))
    return path, rest


def _check_target(
    c: _Compiler, path: KeyPath, action: Action, targets: Mapping[str, TargetSpec]
) -> None:
    target = targets.get(action.target)
    if target is None:
        known = f"; known: {', '.join(sorted(targets))}" if targets else "; no targets configured"
        c.problems.add(
            c.entry,
            (*path, "target"),
            f"unknown target '{action.target}'{did_you_mean(action.target, targets)}{known}",
            c.rule,
        )
    elif action.op not in target.supported_ops:
        c.problems.add(
            c.entry,
            (*path, "op"),
            f"target '{action.target}' does not support op '{action.op}'"
            f"{did_you_mean(action.op, target.supported_ops)}"
            f" (supported: {', '.join(sorted(target.supported_ops))})"
            + (f": {note}" if (note := getattr(target, "unsupported_note", None)) else ""),
            c.rule,
        )
    else:
        for message in target.check_action(action.op, dict(action.task or {})):
            sub, text = _split_check(message)
            c.problems.add(c.entry, (*path, *sub), text, c.rule)


def _check_steps(c: _Compiler, path: KeyPath, action: Action, earlier: list[str]) -> bool:
    """Chain references (see `chains.step_problems`); True if the action reads steps."""
    problems, deferred = step_problems(c.templates, action, earlier)
    for key, message in problems:
        c.problems.add(c.entry, (*path, key), message, c.rule)
    return deferred


def _compile_rule(
    entry: _Entry,
    model: Rule,
    templates: Templates,
    targets: Mapping[str, TargetSpec],
    problems: _Problems,
) -> CompiledRule | None:
    before = len(problems)
    c = _Compiler(templates, entry, model.name, problems)
    when = c.condition(("when",), model.when) if model.when is not None else None
    actions: list[CompiledAction] = []
    step_ids: list[str] = []
    for i, action in enumerate(model.actions):
        path: KeyPath = ("actions", i)
        _check_target(c, path, action, targets)
        deferred = _check_steps(c, path, action, step_ids)
        uid = c.uid((*path, "uid"), action.uid)
        action_when = c.condition((*path, "when"), action.when) if action.when is not None else None
        task_ok = action.task is None or c.task((*path, "task"), action.task)
        if uid is not None and task_ok:
            task = templates.value(action.task) if action.task is not None else None
            actions.append(
                CompiledAction(
                    i,
                    action.op,
                    action.target,
                    uid,
                    task,
                    action_when,
                    action,
                    deferred,
                    tuple(step_ids),
                )
            )
        if action.id is not None:
            step_ids.append(action.id)
    if len(problems) != before:
        return None
    return CompiledRule(
        model.name,
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
    budget: RenderBudget | None = None,
    templates: Templates | None = None,
) -> RuleSet:
    """Load, validate and compile rules; raise RuleError listing every problem. `templates`:
    the bridge's one template environment (else a new one with `budget`, the bounds on one
    event's renders, or the defaults).

    `spec` is a directory (every *.yaml/*.yml in it, sorted by name), a file (relative to
    `base_dir`), or the inline list from bridge.yaml (lines from `config_doc`, under `rules`).
    """
    problems = _Problems()
    ruleset = RuleSet(templates=templates or Templates(budget))
    seen: dict[str, str] = {}
    for entry in _entries(spec, base_dir, config_file, config_doc, problems):
        if not isinstance(entry.raw, dict):
            problems.add(
                entry, (), f"a rule must be a mapping (name, table, actions), {_got(entry.raw)}"
            )
            continue
        raw_name = entry.raw.get("name")
        name = raw_name if isinstance(raw_name, str) else None
        try:
            model = Rule.model_validate(entry.raw)
        except ValidationError as exc:
            _validation_problems(entry, exc, name, problems)
            continue
        if model.name in seen:
            problems.add(
                entry,
                ("name",),
                f"duplicate rule name '{model.name}' (first defined at {seen[model.name]})",
            )
            continue
        seen[model.name] = entry.doc.where(entry.prefix)
        try:
            compiled = _compile_rule(entry, model, ruleset.templates, targets, problems)
        except (RecursionError, MemoryError):  # a check that walks a template's tree
            problems.add(entry, (), TOO_DEEP, model.name)
            continue
        if compiled is not None:
            ruleset.rules.append(compiled)
    if problems:
        count = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RuleError(problems[0] + count, list(problems))
    return ruleset
