"""run_automation against the fake workflow API: every outcome maps to its step status, and a
kill -9 while polling resumes the same execution instead of starting a second one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from task_bridge.fakes.workflow import FakeWorkflow
from task_bridge.targets.base import Call, TargetDeps
from task_bridge.targets.workflow import WorkflowConfig, WorkflowTarget
from tests.integration.conftest import BridgeEnv
from tests.integration.test_targets_e2e import TOKEN, _seed_workflow, _step
from tests.support.wait import wait_until


@pytest.fixture
def workflow() -> Iterator[FakeWorkflow]:
    with FakeWorkflow(token=TOKEN) as fake:
        yield fake


def _op(op_id: str, entity: str) -> Call:
    return Call(op_id, "wf", "run_automation", f"auto-{op_id}", {"entity_id": entity}, 1)


def _run(fake: FakeWorkflow, op: Call, timeout: float = 5.0) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            config = WorkflowConfig(
                kind="workflow",
                base_url=fake.url,
                token=SecretStr(TOKEN),
                poll_interval=0.01,
                poll_timeout=timeout,
            )
            return await WorkflowTarget("wf", config, TargetDeps.of(client)).send(op)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("script", "execution_status", "step_status"),
    [
        (["in_progress", "success"], "success", "COMPLETED"),
        (["failed"], "failed", "FAILED"),
        (["hot"], "hot", "FAILED"),
        (["skipped"], "skipped", "SKIPPED"),
        (["in_progress", "cancelled"], "cancelled", "SKIPPED"),
        (["paused", "scheduled", "paused", "success"], "success", "COMPLETED"),
        (["in_progress"], "timeout", "FAILED"),
    ],
)
def test_each_outcome_maps_to_its_step_status(
    workflow: FakeWorkflow, script: list[str], execution_status: str, step_status: str
) -> None:
    """success -> COMPLETED, failed/hot -> FAILED, skipped/cancelled -> SKIPPED, paused and
    scheduled keep polling, and a poll timeout -> FAILED; the step records the execution."""
    _seed_workflow(workflow, "ent-1", "exec-1", "flow-1")
    workflow.script("flow-1", script)
    delivered = _run(workflow, _op("op1", "ent-1"), timeout=0.3)
    step = _step(workflow, "exec-1", "step-auto")
    assert step["status"] == step_status
    assert step["automationConfig"]["executionStatus"] == execution_status
    (started,) = workflow.automation_executions()
    assert step["automationConfig"]["executionId"] == started["id"] == delivered.remote_id


def test_kill_mid_poll_resumes_the_same_execution(
    bridge_env: BridgeEnv, workflow: FakeWorkflow
) -> None:
    """kill -9 while the bridge polls an automation: after restart it polls the stored
    execution to its end; exactly one execution was ever started."""
    env = bridge_env
    _seed_workflow(workflow, "ent-1", "exec-1", "flow-1")
    workflow.script("flow-1", ["in_progress"] * 40 + ["success"])
    env.write_config(
        rules="""
rules:
  - name: automate
    table: public.orders
    on: [insert]
    actions:
      - {op: run_automation, target: wf, uid: "auto-{{ after.id }}",
         task: {entity_id: "{{ after.customer }}"}}
""",
        extra_targets=f"""
wf:
  kind: workflow
  base_url: {workflow.url}
  token: {TOKEN}
  poll_interval: 100ms
""",
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, customer) VALUES (1, 'new', 'ent-1')")
    wait_until(
        lambda: (
            sum(e["path"].startswith("/v1/automation/executions/") for e in workflow.ledger()) >= 3
        ),
        timeout=30,
        message="polling under way",
    )
    bridge.kill9()
    env.bridge().start()
    wait_until(
        lambda: _step(workflow, "exec-1", "step-auto")["status"] == "COMPLETED",
        timeout=60,
        message="the resumed poll completed the step",
    )
    assert len(workflow.automation_executions()) == 1
