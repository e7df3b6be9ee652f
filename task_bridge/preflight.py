"""`bridge validate --check-source`: do the rules' tables and columns exist in the database,
do rules that read `before.*` have the REPLICA IDENTITY FULL they need, and does no rule name a
partition (published under its partitioned table's name, so such a rule would never fire)?"""

from __future__ import annotations

import fnmatch

import jinja2
import psycopg

from task_bridge.config import LoadedConfig
from task_bridge.errors import SourceUnavailable
from task_bridge.rules.loader import RuleSet
from task_bridge.sources.postgres.replication import CONNECT_TIMEOUT_S, describe
from task_bridge.sources.postgres.slot import GLOB_CHARS, partition_error, relations
from task_bridge.targets.humanlambdas_poller import SCHEMA as TASK_API_SCHEMA

ROW_NAMES = ("after", "before", "row")


def _columns(conn: psycopg.Connection) -> dict[str, tuple[set[str], str]]:
    """Qualified table -> (column names, relreplident)."""
    out: dict[str, tuple[set[str], str]] = {}
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, a.attname, c.relreplident FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    )
    for table, column, replident in rows:
        cols, _ = out.setdefault(table, (set(), replident))
        cols.add(column)
    return out


def check_source(loaded: LoadedConfig, ruleset: RuleSet) -> list[str]:
    pg = loaded.config.source.postgres
    if pg is None:
        return []
    try:
        with psycopg.connect(
            pg.dsn.get_secret_value(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            catalog = _columns(conn)
            roots = relations(conn)
    except psycopg.OperationalError as exc:
        raise SourceUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
    problems: list[str] = []
    for rule in ruleset.rules:
        if rule.table.startswith(f"{TASK_API_SCHEMA}."):
            continue  # events from a task API's poller, not from Postgres
        matched = [t for t in catalog if fnmatch.fnmatchcase(t, rule.table)]
        tables = [t for t in matched if roots.get(t) is None]
        if not GLOB_CHARS & set(rule.table) and (root := roots.get(rule.table)) is not None:
            problems.append(
                f"{rule.where}: rule '{rule.name}': {partition_error(rule.table, root)}"
            )
            continue
        if matched and not tables:
            problems.append(
                f"{rule.where}: rule '{rule.name}': table '{rule.table}' matches only partitions"
                f" ({', '.join(sorted(matched))}), whose changes are published under their"
                " partitioned table's name: name that table in the rule"
            )
            continue
        if not tables:
            problems.append(f"{rule.where}: rule '{rule.name}': table '{rule.table}' not found")
            continue
        used = _names_used(ruleset, rule.model.model_dump())
        for table in tables:
            columns, replident = catalog[table]
            for name in sorted(used):
                obj, _, column = name.partition(".")
                if obj in ROW_NAMES and column not in columns:
                    problems.append(
                        f"{rule.where}: rule '{rule.name}': {name}: table {table}"
                        f" has no column '{column}'"
                    )
            if any(n.startswith("before.") for n in used) and replident != "f":
                problems.append(
                    f"{rule.where}: rule '{rule.name}': uses before.* but {table}"
                    " is not REPLICA IDENTITY FULL (before holds only key columns)"
                )
    return problems


def _names_used(ruleset: RuleSet, value: object) -> set[str]:
    if isinstance(value, str):
        source = value if "{" in value else "{{ " + value + " }}"
        try:
            return ruleset.templates.names_used(source)
        except jinja2.TemplateSyntaxError:  # plain text such as a rule name: nothing used
            return set()
    if isinstance(value, dict):
        return set().union(*(_names_used(ruleset, v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_names_used(ruleset, v) for v in value)) if value else set()
    return set()
