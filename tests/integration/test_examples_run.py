"""The shipped examples work as shipped: bridge.example.yaml with every file of rules/, on the
tables of rules/example-tables.sql, against the fakes `task-bridge fake-api` serves (the same
tokens and passwords as the example's defaults), delivers a task to every target it names."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from task_bridge.fakes.base import FakeApi
from task_bridge.fakes.copilotz import FakeCopilotz
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.fakes.generic import FakeGeneric
from task_bridge.fakes.humanlambdas import FakeHumanLambdas
from task_bridge.fakes.server import build_fakes
from task_bridge.fakes.workflow import FakeWorkflow
from task_bridge.targets.fragment import fragment_task_uuid
from tests.support.bridge_proc import BridgeProcess
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
FAKE_TOKEN = "test-token"
"""What `task-bridge fake-api` accepts by default (its `--token`)."""
BASE_URL_VARS = {
    FakeFragment: "FRAGMENT_BASE_URL",
    FakeHumanLambdas: "HUMANLAMBDAS_BASE_URL",
    FakeCopilotz: "COPILOTZ_BASE_URL",
    FakeWorkflow: "WORKFLOW_BASE_URL",
    FakeGeneric: "TICKETS_BASE_URL",
}
ENTITY = str(uuid.UUID(int=7))


@pytest.fixture
def fakes() -> Iterator[dict[type[FakeApi], FakeApi]]:
    started = {type(fake): fake.start() for fake in build_fakes(FAKE_TOKEN)}
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()


def _seed_workflow(fake: FakeWorkflow) -> None:
    """An entity waiting on an automation step, and a visit step (what workflow.yaml drives)."""
    fake.seed_entity(
        {
            "_id": ENTITY,
            "workflows": {
                "install": [
                    {"id": "exec-1", "task_id": "step-auto", "task_execution_type": "AUTOMATION"}
                ]
            },
        }
    )
    fake.seed_execution(
        {
            "id": "exec-1",
            "flow": [
                {"id": "step-auto", "type": "STEP", "automationConfig": {"flowId": "flow-1"}},
                {"id": "step-visit", "type": "STEP", "status": "PENDING"},
            ],
        }
    )


def _steps(fake: FakeWorkflow) -> dict[str, Any]:
    return {step["id"]: step for step in fake.executions()["exec-1"]["flow"]}


def test_the_shipped_examples_deliver_to_every_target(
    pg_dsn: str,
    fakes: dict[type[FakeApi], FakeApi],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows of each example table reach their target's fake: Fragment upserts and closes,
    the chain's ticket, Copilotz create and advance, the http target's create and close, a Human
    Lambdas create whose completion closes its Fragment task, and the workflow's automation
    and manual step."""
    shutil.copy(ROOT / "bridge.example.yaml", tmp_path / "bridge.yaml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("FRAGMENT_TOKEN", FAKE_TOKEN)
    for kind, var in BASE_URL_VARS.items():
        monkeypatch.setenv(var, fakes[kind].url)
    fragment, hl = fakes[FakeFragment], fakes[FakeHumanLambdas]
    copilotz, tickets, workflow = fakes[FakeCopilotz], fakes[FakeGeneric], fakes[FakeWorkflow]
    assert isinstance(hl, FakeHumanLambdas) and isinstance(workflow, FakeWorkflow)
    _seed_workflow(workflow)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute((ROOT / "rules" / "example-tables.sql").read_text())
    bridge = BridgeProcess(tmp_path / "bridge.yaml", tmp_path / "bridge.log")
    bridge.start()
    try:
        bridge.wait_for_log("source.started", timeout=60)
        _write_rows(pg_dsn)
        wait_until(lambda: len(hl.tasks()) == 1, timeout=60, message="human lambdas task")
        (task_id,) = hl.tasks()
        hl.complete(task_id)
        _wait_for_tasks(fragment, copilotz, tickets, workflow)
    finally:
        bridge.stop()
    assert not bridge.events("op.dead"), bridge.log_tail()


def _write_rows(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in (
            "INSERT INTO orders (id, status, amount, customer, tags, meta)"
            """ VALUES (1, 'paid', 12.50, 'Ada', '{vip}', '{"channel": "web"}')""",
            "UPDATE orders SET status = 'shipped' WHERE id = 1",
            "INSERT INTO claims (id, customer, amount) VALUES (1, 'Ada', 80)",
            "INSERT INTO onboardings (id, customer) VALUES (1, 'Ada')",
            "UPDATE onboardings SET stage = 2 WHERE id = 1",
            "INSERT INTO incidents (id, title, severity) VALUES (1, 'Disk full', 'high')",
            "UPDATE incidents SET resolved = true WHERE id = 1",
            "INSERT INTO refunds (id, order_id, amount, reason) VALUES (1, 1, 600, 'broken')",
            "INSERT INTO installations (id, entity_id, status, workflow_execution_id,"
            f" visit_step_id) VALUES (1, '{ENTITY}', 'new', 'exec-1', 'step-visit')",
            "UPDATE installations SET status = 'scheduled' WHERE id = 1",
            "UPDATE installations SET status = 'visited' WHERE id = 1",
        ):
            conn.execute(statement)


def _wait_for_tasks(*fakes: FakeApi) -> None:
    fragment, copilotz, tickets, workflow = fakes
    assert isinstance(workflow, FakeWorkflow)

    def fragment_done() -> bool:
        tasks = fragment.tasks()
        order = tasks.get(str(fragment_task_uuid("order-1-review")), {})
        refund = tasks.get(str(fragment_task_uuid("refund-1")), {})
        claim = tasks.get(str(fragment_task_uuid("claim-1-review")), {})
        return order.get("status") == "DONE" and refund.get("status") == "DONE" and bool(claim)

    wait_until(fragment_done, timeout=60, message="fragment: order closed, claim, refund closed")
    wait_until(
        lambda: [t.get("currentStep") for t in copilotz.tasks().values()] == [2],
        timeout=60,
        message="copilotz: onboarding created and advanced to step 2",
    )
    wait_until(lambda: len(tickets.tasks()) == 2, timeout=60, message="tickets: claim, incident")
    wait_until(
        lambda: (
            [_steps(workflow)[s].get("status") for s in ("step-auto", "step-visit")]
            == ["COMPLETED", "COMPLETED"]
        ),
        timeout=60,
        message="workflow: automation run, visit step completed",
    )
