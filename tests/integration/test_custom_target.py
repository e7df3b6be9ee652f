"""A target family defined entirely in this file and registered with one line is validated,
run and delivered to end to end: the steps CONTRIBUTING.md lists ("Adding a target")."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from task_bridge.app import App
from task_bridge.cli import main
from task_bridge.config import load_config
from task_bridge.fakes.generic import FakeGeneric
from task_bridge.targets import register
from task_bridge.targets.base import Call, Delivered
from task_bridge.targets.http import HttpTarget, TargetConfigBase, json_body
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

TOKEN = "notes-token"


# Step 1: the config model. `kind` names the family; OPS and check_action serve `validate`.
class NotesConfig(TargetConfigBase):
    kind: Literal["notes"]
    token: SecretStr

    OPS = frozenset({"create", "close"})

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        if op == "create" and "title" not in task:
            return ["task.title: required by the notes API"]
        return []


# Step 2: the target. It gets one `Call` per attempt and answers `Delivered` (or raises).
class NotesTarget(HttpTarget):
    kind = "notes"
    config: NotesConfig

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}

    async def send(self, call: Call) -> Delivered:
        if call.op == "create":
            response = await self.call(
                "POST", "/tasks", dict(call.payload), headers={"Idempotency-Key": call.op_id}
            )
            return Delivered(response.status_code, str(json_body(response)["id"]))
        remote_id = await self.store.get_remote_id(self.name, call.uid)  # what the create returned
        response = await self.call("POST", f"/tasks/{remote_id}/close")
        return Delivered(response.status_code, remote_id)


# Step 3: one registry line.
register(NotesConfig, NotesTarget)

RULES = """
rules:
  - name: notes
    table: public.orders
    on: [insert, update]
    actions:
      - {op: create, target: notes, uid: "order-{{ after.id }}", when: "op == 'insert'",
         task: {title: "Order {{ after.id }}"}}
  - name: shipped
    table: public.orders
    on: [update]
    when: after.status == 'shipped'
    actions:
      - {op: close, target: notes, uid: "order-{{ after.id }}"}
"""


def _notes_target(fake: FakeGeneric) -> str:
    return f"notes:\n  kind: notes\n  base_url: {fake.url}\n  token: {TOKEN}\n"


def test_a_target_registered_in_one_line_is_validated_run_and_delivered(
    bridge_env: BridgeEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = bridge_env
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # `main` masks secrets on these streams;
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # put the test's back afterwards
    with FakeGeneric(token=TOKEN) as fake:
        # validate: the family's own check runs, and names file, line and key
        path = env.write_config(
            rules=RULES.replace('title: "Order {{ after.id }}"', 'name: "x"'),
            extra_targets=_notes_target(fake),
        )
        assert main(["validate", "-c", str(path)]) == 1
        assert "rules.yaml:8: rule 'notes': actions[0].task.title: required by the notes API" in (
            capsys.readouterr().err
        )
        path = env.write_config(rules=RULES, extra_targets=_notes_target(fake))
        assert main(["validate", "-c", str(path)]) == 0

        # run: the bridge, embedded, delivers to it
        app = App(load_config(path), logging.getLogger("task_bridge"))
        codes: list[int] = []
        runner = threading.Thread(target=lambda: codes.append(app.run()))
        runner.start()
        try:
            wait_until(lambda: env.confirmed_flush_lsn() is not None, message="the slot")
            env.sql("INSERT INTO orders (id, status) VALUES (1, 'new'), (2, 'new')")
            env.sql("UPDATE orders SET status = 'shipped' WHERE id = 1")
            wait_until(
                lambda: (
                    sorted((t["title"], t["status"]) for t in fake.tasks().values())
                    == [("Order 1", "closed"), ("Order 2", "open")]
                ),
                timeout=60,
                message="both notes at the fake, order 1 closed",
            )
        finally:
            app.stop()
            runner.join(timeout=60)
        assert codes == [0]  # stopped cleanly (the fake refuses a wrong token with 401)
