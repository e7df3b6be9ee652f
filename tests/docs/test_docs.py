"""The user's docs (README.md, ARCHITECTURE.md, docs/) hold up from a clone alone: links
resolve, the tests they cite exist, and the lists of exit codes, commands, metrics and log
events match the code they describe. The metric and log-event lists are derived from the code,
so a new metric or event fails here until docs/observability.md names it."""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from task_bridge import errors
from task_bridge.cli import _parser
from task_bridge.schemas import schema_for
from task_bridge.yamlsrc import load_yaml_text

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
USER_FILES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "CONTRIBUTING.md", *PAGES]
SHIPPED_EXAMPLES = [ROOT / "bridge.example.yaml", *sorted((ROOT / "rules").iterdir())]

_FENCE = re.compile(r"^(```|~~~)(\w*)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> Iterator[str]:
    yield from _LINK.findall(_prose(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", USER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repo(page: Path) -> None:
    """Each relative link (and #anchor) of a user-facing page names a file of this repository
    (a heading of it), never something outside the clone."""
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert broken == []


@pytest.mark.parametrize(
    "path", [*USER_FILES, *SHIPPED_EXAMPLES], ids=lambda p: str(p.relative_to(ROOT))
)
def test_nothing_points_outside_the_clone(path: Path) -> None:
    """No page or example refers to the project's internal files (`../shared`, the SPEC)."""
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text
    assert not re.search(r"\bSPEC\b", text)


def test_the_readme_links_the_docs_and_the_index_links_every_page() -> None:
    """README -> docs/index.md -> every page of docs/."""
    assert "docs/index.md" in set(_links(ROOT / "README.md"))
    linked = {target.partition("#")[0] for target in _links(DOCS / "index.md")}
    assert {p.name for p in PAGES} - {"index.md"} <= linked


def _test_refs() -> Iterator[tuple[Path, str, str]]:
    for page in PAGES:
        for file, name in _TEST_REF.findall(page.read_text(encoding="utf-8")):
            yield page, file, name


def _functions(file: Path) -> set[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_cited_test_exists() -> None:
    """Each `tests/...py::test_name` the docs cite is a test function of that file."""
    missing = [
        f"{page.name}: {file}::{name}"
        for page, file, name in _test_refs()
        if not (ROOT / file).exists() or name not in _functions(ROOT / file)
    ]
    assert missing == []


def test_each_guarantee_names_the_tests_that_prove_it() -> None:
    """docs/guarantees.md has a section per guarantee G1-G11, each citing a test."""
    text = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    names = [section.split(":", 1)[0] for section in sections]
    assert names == [f"G{i}" for i in range(1, 12)]
    for section in sections:
        assert _TEST_REF.search(section), section.splitlines()[0]


def _table_keys(page: Path, heading: str) -> set[str]:
    """The backticked first cells of the table(s) under `## heading` (up to the next one)."""
    text = page.read_text(encoding="utf-8")
    part = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", part, flags=re.M))


def test_exit_codes_are_the_ones_errors_defines() -> None:
    """docs/cli.md lists exactly the exit codes of task_bridge.errors, and exit_code() maps each
    documented class of error to its documented code."""
    codes = {errors.EXIT_OK, errors.EXIT_INVALID, errors.EXIT_UNAVAILABLE, errors.EXIT_INTERNAL}
    assert _table_keys(DOCS / "cli.md", "Exit codes") == {str(c) for c in codes}
    assert errors.exit_code(None) == 0
    assert errors.exit_code(errors.ConfigError("x")) == 1
    assert errors.exit_code(errors.SourceUnavailable("x")) == 2
    assert errors.exit_code(errors.OutboxUnavailable("x")) == 2
    assert errors.exit_code(RuntimeError("x")) == 3


def _subcommands(parser: Any) -> dict[str, Any]:
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return dict(actions[0].choices) if actions else {}


def test_every_command_is_documented() -> None:
    """docs/cli.md has a section per command, and its outbox table names every subcommand."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = _subcommands(_parser())
    for name, parser in commands.items():
        assert f"### `task-bridge {name}`" in text, name
        for sub in _subcommands(parser):
            assert f"| `{name} {sub}" in text, f"{name} {sub}"


def _code_calls() -> Iterator[tuple[ast.Call, Path]]:
    for file in sorted((ROOT / "task_bridge").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                yield node, file


def _const(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def code_metrics() -> set[str]:
    """Names of every Prometheus metric the package creates."""
    kinds = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
    found = set()
    for call, _ in _code_calls():
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in kinds and call.args and (metric := _const(call.args[0])):
            found.add(metric)
    return found


_EVENT = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*$")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def code_log_events() -> set[str]:
    """Every event name the package logs: `log(logger, level, "event", ...)`,
    `logger.<level>("event", ...)`, and the events sources report through `Lag("event", ...)`."""
    found = set()
    for call, _ in _code_calls():
        func = call.func
        name = func.id if isinstance(func, ast.Name) else None
        position = 2 if name == "log" else 0
        if name in ("log", "Lag") or (isinstance(func, ast.Attribute) and func.attr in _LEVELS):
            event = _const(call.args[position]) if len(call.args) > position else None
        else:
            event = None
        if event is not None and _EVENT.match(event):
            found.add(event)
    return found


def test_the_metrics_page_lists_every_metric_of_the_code() -> None:
    """docs/observability.md's metric table names exactly the metrics the code creates."""
    documented = _table_keys(DOCS / "observability.md", "Metrics")
    assert code_metrics(), "the extraction finds the metrics"
    assert sorted(code_metrics() - documented) == [], "undocumented metrics"
    assert sorted(documented - code_metrics()) == [], "documented metrics the code lacks"


def test_the_log_page_lists_every_log_event_of_the_code() -> None:
    """docs/observability.md's log table names exactly the events the code logs."""
    documented = _table_keys(DOCS / "observability.md", "Logs")
    assert {"op.dead", "source.started", "shutdown"} <= code_log_events()
    assert sorted(code_log_events() - documented) == [], "undocumented log events"
    assert sorted(documented - code_log_events()) == [], "documented events the code lacks"


def _yaml_blocks() -> Iterator[tuple[str, str]]:
    for page in [ROOT / "README.md", *PAGES]:
        for match in _FENCE.finditer(page.read_text(encoding="utf-8")):
            if match.group(2) == "yaml":
                line = page.read_text(encoding="utf-8")[: match.start()].count("\n") + 2
                yield f"{page.relative_to(ROOT)}:{line}", match.group(3)


CONFIG_KEYS = {"source", "outbox", "delivery", "targets", "rules", "limits"}
STAND_IN_SOURCE = {"postgres": {"dsn": "postgresql://localhost/app"}}


def _checked_documents(where: str, text: str) -> Iterator[tuple[str, Any]]:
    """(schema kind, document) for each part of a YAML example that is a config or rule file."""
    import yaml

    several = "\n---\n" in text  # Kubernetes manifests; rule text inside is read below
    for doc in yaml.safe_load_all(text) if several else [load_yaml_text(text, where).data]:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "ConfigMap":
            for name, value in (doc.get("data") or {}).items():
                if name.endswith(".yaml"):
                    yield from _checked_documents(f"{where} {name}", value)
        elif set(doc) == {"rules"} and isinstance(doc["rules"], list):
            yield "rules", doc
        elif doc and set(doc) <= CONFIG_KEYS:
            yield "config", {"source": STAND_IN_SOURCE, **doc}


def test_every_yaml_example_in_the_docs_fits_the_schema() -> None:
    """Each ```yaml block of the docs that is (part of) a bridge.yaml or a rule file passes the
    JSON Schema: a typo in an example is a failing test, not a user's puzzle."""
    problems, checked = [], 0
    for where, text in _yaml_blocks():
        for kind, document in _checked_documents(where, text):
            checked += 1
            validator = Draft202012Validator(schema_for(kind))
            problems += [f"{where}: {e.message}" for e in validator.iter_errors(document)]
    assert checked >= 10 and problems == []
