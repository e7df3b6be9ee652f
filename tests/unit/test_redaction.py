"""Every secret in the config is found for masking; masking leaves nothing of it behind."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from task_bridge.config import config_model, load_config
from task_bridge.redaction import Redactor

# One distinct value per secret; every value must come back from `LoadedConfig.secrets()`.
SECRETS = {
    "source.postgres.dsn": "pg-dsn-pw-1",
    "outbox.url": "outbox-pw-2",
    "targets.fragment.token": "frag-tok-3",
    "targets.humanlambdas.token": "hl-tok-4",
    "targets.copilotz.password": "cop-pw-5",
    "targets.workflow.token": "wf-tok-6",
    "targets.http.token": "http-tok-7",
    "targets.http.headers": "hdr-key-8",
    "source.kafka.client": "sasl-pw-9",
}

TARGETS = f"""
targets:
  fragment: {{kind: fragment, token: {SECRETS["targets.fragment.token"]}}}
  hl: {{kind: humanlambdas, token: {SECRETS["targets.humanlambdas.token"]}, org: o, queue: q}}
  cop:
    kind: copilotz
    username: u
    password: {SECRETS["targets.copilotz.password"]}
    namespace: n
  wf: {{kind: workflow, base_url: "https://wf", token: {SECRETS["targets.workflow.token"]}}}
  tickets:
    kind: http
    base_url: https://tickets
    token: {SECRETS["targets.http.token"]}
    headers: {{X-Api-Key: {SECRETS["targets.http.headers"]}, Accept: application/json}}
    ops: {{create: {{path: /t}}}}
outbox:
  url: postgresql://box:{SECRETS["outbox.url"]}@db/x
rules: []
"""
POSTGRES = f"""
source:
  postgres:
    dsn: postgresql://app:{SECRETS["source.postgres.dsn"]}@db/app
{TARGETS}"""
KAFKA = f"""
source:
  kafka:
    bootstrap_servers: k:9092
    topics: [t]
    client: {{sasl_plain_username: u, sasl_plain_password: {SECRETS["source.kafka.client"]}}}
{TARGETS}"""


def _secret_fields(model: type[BaseModel], prefix: str) -> set[str]:
    """Dotted paths of every SecretStr field, and every free-form mapping of strings (headers,
    client options: they may hold credentials), reachable from `model`."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        for kind in _leaves(field.annotation):
            if kind is SecretStr or kind == "mapping":
                found.add(path)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= _secret_fields(kind, path)
    return found


def _leaves(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    if origin is dict:
        value = typing.get_args(annotation)[1]
        return ["mapping"] if value in (str, Any) else _leaves(value)
    if origin in (list, tuple):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


# Where secrets live in the config models (`targets.*`: any target kind's field).
SECRET_FIELDS = {
    "source.postgres.dsn",
    "source.kafka.client",
    "outbox.url",
    "targets.token",  # fragment, humanlambdas, workflow, http
    "targets.password",  # copilotz
    "targets.headers",  # http
}
NOT_SECRET = {"targets.ops.headers", "rules", "source.kafka.json_mapping"}  # templates, paths


def test_every_secret_field_of_the_config_models_is_covered_here() -> None:
    """A new SecretStr (or free-form string mapping) in any config model fails this test
    until it is listed above and given a value in SECRETS (and so masked below)."""
    assert _secret_fields(config_model(), "") - NOT_SECRET == SECRET_FIELDS
    for field in SECRET_FIELDS:  # each has a value in SECRETS (targets: `targets.KIND.name`)
        name = field.removeprefix("targets.")
        assert field in SECRETS or any(k.endswith(f".{name}") for k in SECRETS), field


def test_every_configured_secret_is_masked(tmp_path: Path) -> None:
    """Each secret value (and a DSN's or URL's password) is found and masked in text."""
    found: set[str] = set()
    for name, text in (("pg.yaml", POSTGRES), ("kafka.yaml", KAFKA)):
        path = tmp_path / name
        path.write_text(text)
        found |= set(load_config(path, env={}).secrets())
    redact = Redactor(found)
    for value in SECRETS.values():
        assert value in found
        assert value not in redact(f"error: ...{value}... Bearer {value}")
    assert "application/json" not in found  # a header that names no credential is kept


def test_a_redactor_masks_strings_inside_json_values() -> None:
    """Responses kept for chains are masked string by string; other values pass."""
    redact = Redactor(["tok-123456"])
    value = {"echo": {"authorization": "Bearer tok-123456"}, "n": 1, "l": ["tok-123456"]}
    assert redact.value(value) == {"echo": {"authorization": "Bearer ***"}, "n": 1, "l": ["***"]}
