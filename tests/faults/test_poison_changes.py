"""A poison change never stops the stream (issue #14 item 8, acceptance g).

One change the bridge cannot decode, or whose rule raises, is dead-lettered with its position,
table, key, reason and raw values; the changes after it are delivered, the slot moves past it,
and a restart does not meet it again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

DOCS_DDL = "CREATE TABLE public.docs (id bigint PRIMARY KEY, doc jsonb, j json, n int)"
DOC_RULES = """
rules:
  - name: doc
    table: public.docs
    on: [insert]
    when: "after.n is none or 100 // after.n > 0"
    actions:
      - {op: upsert, target: fragment, uid: "doc-{{ after.id }}",
         task: {fields: {title: "doc {{ after.id }}"}}}
"""
DEEP = "(repeat('[', 5000) || repeat(']', 5000))"
HUGE = "('[' || repeat('7', 5000) || ']')"

CASES = {
    "jsonb nested 5,000 levels": (
        f"INSERT INTO docs (id, doc) VALUES (2, {DEEP}::jsonb)",
        "poison message: cannot decode this insert of public.docs: column 'doc' (jsonb):"
        " RecursionError",
    ),
    "a value whose loader raises": (
        f"INSERT INTO docs (id, j) VALUES (2, {HUGE}::json)",
        "poison message: cannot decode this insert of public.docs: column 'j' (json):"
        " ValueError: Exceeds the limit (4300 digits)",
    ),
    "a rule that raises for one row only": (
        "INSERT INTO docs (id, n) VALUES (2, 0)",
        "rule 'doc' action 0: when: ZeroDivisionError",
    ),
}


def _task(env: BridgeEnv, uid: str) -> dict[str, Any] | None:
    return env.fake.tasks().get(fragment_task_uuid(uid))


@pytest.mark.parametrize("case", list(CASES))
def test_a_poison_change_is_dead_lettered_and_later_changes_are_delivered(
    bridge_env: BridgeEnv, case: str
) -> None:
    """Rows 1 and 3 around the poison row 2 become tasks; row 2 is one dead entry with its
    reason, key and values, listed by `outbox list --status dead`; after a restart row 4 is
    delivered and row 2 is not met again (the slot moved past it)."""
    env = bridge_env
    statement, reason = CASES[case]
    env.sql(DOCS_DDL)
    env.write_config(rules=DOC_RULES)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO docs (id) VALUES (1)", statement, "INSERT INTO docs (id) VALUES (3)")
    wait_until(
        lambda: _task(env, "doc-1") is not None and _task(env, "doc-3") is not None,
        timeout=60,
        message=f"rows 1 and 3 delivered around the poison row ({bridge.log_tail()})",
    )
    dead = env.outbox_rows("status = 'dead'")
    assert len(dead) == 1, dead
    assert dead[0]["last_error"].startswith(reason), dead[0]["last_error"]
    assert _task(env, "doc-2") is None
    if dead[0]["op"] == "poison":  # a decoding failure: the row as far as it was read
        assert dead[0]["uid"] == "public.docs[id=2]"
        raw = json.loads(dead[0]["payload"])
        assert raw["key"] == {"id": "2"} and raw["after"]["id"] == "2"
        assert raw["table"] == "public.docs" and raw["op"] == "insert"
        column = "doc" if "jsonb" in reason else "j"
        assert raw["after"][column].startswith("[")
        assert len(bridge.events("event.poison")) == 1
    listed = bridge.run_cli("outbox", "list", "--status", "dead")
    assert listed.returncode == 0 and dead[0]["op_id"][:8] in listed.stdout, listed.stdout
    assert bridge.terminate() == 0, bridge.log_tail()

    again = env.bridge().start()
    again.wait_for_log("source.started")
    env.sql("INSERT INTO docs (id) VALUES (4)")
    wait_until(
        lambda: _task(env, "doc-4") is not None,
        timeout=60,
        message=f"row 4 delivered after the restart ({again.log_tail()})",
    )
    assert env.outbox_count("status = 'dead'") == 1, "the poison row is not met twice"
    assert again.events("event.poison") == []
