"""Fragment target without a server: task UUIDs, action checks, config and secrets."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from pydantic import SecretStr, ValidationError

from task_bridge.targets.fragment import (
    DEFAULT_BASE_URL,
    FragmentConfig,
    fragment_task_uuid,
)

TOKEN = "frag-secret-123"


def _config(**extra: object) -> FragmentConfig:
    return FragmentConfig(kind="fragment", token=SecretStr(TOKEN), **extra)


def _target() -> FragmentConfig:
    """Actions are checked by the config model: no client, no event loop."""
    return _config()


def test_task_uuid_is_md5_of_the_uid() -> None:
    """A non-UUID uid maps to UUID(md5(uid)) as in Fragment's "Map task IDs" guide."""
    assert fragment_task_uuid("ticket#ID#123") == "c6951f29-e70d-04c9-3733-50f90b248db2"
    assert fragment_task_uuid("commande-é") == "49aec03b-a24a-819f-73a8-b596c6a71430"
    assert fragment_task_uuid("order-1") != fragment_task_uuid("order-2")


def test_task_uuid_passes_uuids_through() -> None:
    """A uid that already is a UUID is used as is (in canonical form)."""
    value = str(uuid.uuid4())
    assert fragment_task_uuid(value) == value
    assert fragment_task_uuid(value.upper()) == value
    for form in (value.replace("-", ""), f"{{{value}}}", f"urn:uuid:{value}"):
        assert fragment_task_uuid(form) == value
    not_hex = value[:-1] + "g"
    assert fragment_task_uuid(not_hex) == str(uuid.UUID(hashlib.md5(not_hex.encode()).hexdigest()))


def test_config_defaults_and_masked_token() -> None:
    """The base URL defaults to Fragment's; the token never shows in repr or str."""
    config = _config(rate_limit="60/min", timeout="10s")
    assert config.base_url == DEFAULT_BASE_URL == "https://api.onfragment.com/api/v1"
    assert config.rate_limit == 1.0 and config.timeout == 10.0
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert TOKEN not in repr(_target())


def test_config_rejects_unknown_keys_and_other_kinds() -> None:
    """A typo or a different kind is a validation error, not silently ignored."""
    with pytest.raises(ValidationError, match="tokn"):
        _config(tokn="x")
    with pytest.raises(ValidationError):
        FragmentConfig(kind="copilotz", token=SecretStr(TOKEN))


def test_supported_ops() -> None:
    """The Fragment target offers create, upsert, update and close."""
    assert _target().supported_ops == {"create", "upsert", "update", "close"}
    assert _target().kind == "fragment"


def test_check_action_accepts_documented_keys() -> None:
    """A task made of documented keys, with a literal or templated status, has no problems."""
    target = _target()
    task = {
        "fields": {"title": "Review {{ after.id }}", "anything_custom": 1},
        "due_at": "{{ after.created_at }}",
        "status": "STARTED",
        "queue_uid": "q",
        "archived": False,
    }
    assert target.check_action("upsert", task) == []
    assert target.check_action("update", {"status": "{{ 'DONE' if after.x else 'TODO' }}"}) == []
    assert target.check_action("close", {}) == []


def test_check_action_names_unknown_keys_with_a_suggestion() -> None:
    """An unknown top-level key is reported with the closest known key."""
    assert _target().check_action("upsert", {"feilds": {"title": "t"}}) == [
        "task.feilds: unknown Fragment task key (did you mean 'fields'?)"
    ]
    assert _target().check_action("upsert", {"zzz": 1}) == ["task.zzz: unknown Fragment task key"]


def test_check_action_rejects_bad_shapes_and_statuses() -> None:
    """fields must be a mapping, status must be TODO/STARTED/DONE, the task a mapping."""
    target = _target()
    assert target.check_action("upsert", {"fields": ["a"]}) == ["task.fields: must be a mapping"]
    problems = target.check_action("update", {"status": "CLOSED"})
    assert len(problems) == 1 and problems[0].startswith("task.status:")
    assert "TODO, STARTED, DONE" in problems[0]
    assert target.check_action("upsert", ["not", "a", "mapping"]) == [  # type: ignore[arg-type]
        "task: must be a mapping"
    ]
