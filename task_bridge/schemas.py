"""JSON Schemas of `bridge.yaml` and of rule files, generated from the pydantic models.

`task-bridge schema config|rules` prints them; the repo ships them in `schema/` (regenerated
by `python -m task_bridge.docgen`), so editors with yaml-language-server complete and check
both files. Durations and rates are strings with a pattern (a bare number of seconds is also
a duration), `${VAR}` references are allowed where the loader expands them, and unknown keys
are refused as the loader refuses them.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import SecretStr
from pydantic.json_schema import GenerateJsonSchema

from task_bridge.config import config_model
from task_bridge.durations import format_duration
from task_bridge.rules.schema import Rule

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILES: Final = {"config": "bridge.schema.json", "rules": "rules.schema.json"}
"""What `task-bridge schema KIND` prints, by the file name it is shipped as in `schema/`."""


def config_schema() -> dict[str, Any]:
    """The schema of `bridge.yaml`, with the target kinds registered now; an inline `rules:`
    list is checked like a rule file."""
    schema = _tidy(config_model().model_json_schema(schema_generator=_Generator))
    rules = _rule_schema()
    defs = schema.setdefault("$defs", {})
    defs.update(rules.pop("$defs", {}))
    defs["Rule"] = rules
    schema["properties"]["rules"]["anyOf"] = [
        {"type": "string", "description": "a directory of *.yaml rule files, or one file"},
        {"type": "array", "items": {"$ref": "#/$defs/Rule"}, "description": "inline rules"},
    ]
    return _document(schema, "task-bridge configuration (bridge.yaml)")


def rules_schema() -> dict[str, Any]:
    """The schema of a rule file: `rules: [...]`, or a bare list of rules."""
    rule = _rule_schema()
    defs = rule.pop("$defs", {})
    defs["Rule"] = rule
    rules = {"type": "array", "items": {"$ref": "#/$defs/Rule"}}
    schema: dict[str, Any] = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"rules": {**rules, "description": "the rules of this file"}},
                "additionalProperties": False,
            },
            rules,
            {"type": "null", "description": "an empty file holds no rules"},
        ],
        "$defs": defs,
    }
    return _document(schema, "task-bridge rule file")


def schema_for(kind: str) -> dict[str, Any]:
    """`config` or `rules` (the keys of `SCHEMA_FILES`)."""
    return {"config": config_schema, "rules": rules_schema}[kind]()


class _Generator(GenerateJsonSchema):
    """Defaults made by a factory are shown; a secret's default is shown as it is (a default
    is never a real secret)."""

    def default_schema(self, schema: Any) -> Any:
        """A `default_factory` without arguments is shown by the value it makes."""
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            schema = {k: v for k, v in schema.items() if k != "default_factory"}
            schema["default"] = factory()
        return super().default_schema(schema)

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, SecretStr):
            return dft.get_secret_value()
        return super().encode_default(dft)


def _tidy(node: Any) -> Any:
    """Drop the default of a nested section (each of its keys shows its own), spell a
    duration's default as written in YAML (`500ms`, not `0.5`), and make each description
    one line (docstrings wrap)."""
    if isinstance(node, dict):
        if "$ref" in node:
            node.pop("default", None)
        if isinstance(node.get("description"), str):
            node["description"] = " ".join(node["description"].split())
        units = [node.get("x-unit")] + [
            alt.get("x-unit") for alt in node.get("anyOf", ()) if isinstance(alt, dict)
        ]
        if "duration" in units and isinstance(node.get("default"), int | float):
            node["default"] = format_duration(node["default"])
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)
    return node


def _rule_schema() -> dict[str, Any]:
    schema: dict[str, Any] = _tidy(Rule.model_json_schema(schema_generator=_Generator))
    return schema


def _document(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, **{k: v for k, v in schema.items() if k != "title"}}
