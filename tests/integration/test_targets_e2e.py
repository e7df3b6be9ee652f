"""Every target end to end: a Postgres change drives the documented calls against its fake,
with the right auth header and body shape, asserted on the fake's ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from task_bridge.fakes.copilotz import FakeCopilotz
from task_bridge.fakes.generic import FakeGeneric
from task_bridge.fakes.humanlambdas import FakeHumanLambdas
from task_bridge.fakes.workflow import FakeWorkflow
from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

TOKEN = "other-api-token"


def _calls(ledger: list[dict[str, Any]], method: str | None = None) -> list[dict[str, Any]]:
    return [e for e in ledger if method is None or e["method"] == method]


@pytest.fixture
def humanlambdas() -> Iterator[FakeHumanLambdas]:
    with FakeHumanLambdas(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def copilotz() -> Iterator[FakeCopilotz]:
    with FakeCopilotz(username="bridge", password="pw-123", namespace="acme") as fake:
        yield fake


@pytest.fixture
def workflow() -> Iterator[FakeWorkflow]:
    with FakeWorkflow(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def generic() -> Iterator[FakeGeneric]:
    with FakeGeneric(token=TOKEN) as fake:
        yield fake


def test_humanlambdas_create_and_the_completed_task_feedback_loop(
    bridge_env: BridgeEnv, humanlambdas: FakeHumanLambdas
) -> None:
    """A paid order creates a Human Lambdas task (Token auth, {data}); completing it in the
    fake becomes an event whose rule closes the order's Fragment task, exactly once, and a
    restart neither re-closes it nor creates the task again."""
    env = bridge_env
    rules = """
rules:
  - name: review
    table: public.orders
    on: [insert]
    actions:
      - {op: upsert, target: fragment, uid: "order-{{ after.id }}",
         task: {fields: {title: "Order {{ after.id }}"}}}
      - {op: create, target: hl, uid: "order-{{ after.id }}",
         task: {data: {order_id: "{{ after.id }}", amount: "{{ after.amount }}"}}}
  - name: reviewed
    table: humanlambdas.reviews
    on: [completed]
    actions:
      - {op: close, target: fragment, uid: "order-{{ after.data.order_id }}"}
"""
    env.write_config(
        rules=rules,
        extra_targets=f"""
hl:
  kind: humanlambdas
  base_url: {humanlambdas.url}
  token: {TOKEN}
  org: acme
  queue: reviews
  poll_completed: true
  poll_interval: 200ms
""",
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, amount) VALUES (1, 'paid', 12.5)")
    wait_until(lambda: len(humanlambdas.tasks()) == 1, timeout=30, message="HL task")
    (create,) = _calls(humanlambdas.ledger(), "POST")
    assert create["path"] == "/orgs/acme/queues/reviews/tasks/create"
    assert create["headers"]["authorization"] == "Token ***"
    assert create["body"] == {"data": {"order_id": 1, "amount": "12.50"}}
    task_id = next(iter(humanlambdas.tasks().values()))["id"]

    humanlambdas.complete(task_id, {"verdict": "ok"})
    first = fragment_task_uuid("order-1")
    wait_until(
        lambda: env.fake.tasks().get(first, {}).get("status") == "DONE",
        timeout=30,
        message="the completed review closed the Fragment task",
    )
    bridge.terminate()
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    wait_until(
        lambda: len(_calls(humanlambdas.ledger(), "GET")) >= 2,
        timeout=30,
        message="the poller ran again after the restart",
    )
    bridge.terminate()
    (started,) = [
        e for e in bridge.events("source.started") if e["source"] == "humanlambdas:hl:reviews"
    ]
    assert '"newest"' in started["checkpoint"], "the poller resumed from its stored cursor"
    closes = [e for e in env.fake.ledger() if e["method"] == "PATCH" and e["uid"] == first]
    assert len(closes) == 1
    assert env.outbox_count("rule = 'reviewed'") == 1
    assert len(humanlambdas.tasks()) == 1


def test_copilotz_login_create_update_advance_close(
    bridge_env: BridgeEnv, copilotz: FakeCopilotz
) -> None:
    """Login gives the bearer token; create sends extId = uid and keeps the returned _id;
    advance merges context; close sets status completed; an expired token logs in again."""
    env = bridge_env
    rules = """
rules:
  - name: onboarding
    table: public.orders
    on: [insert]
    actions:
      - op: upsert
        target: cz
        uid: "onb-{{ after.id }}"
        task: {workflow: 1, currentStep: 1, status: active, name: "Onboard {{ after.id }}",
               description: "d", context: {customer: "{{ after.customer }}"}}
  - name: step
    table: public.orders
    on: [update]
    when: after.status == 'step2'
    actions:
      - {op: advance, target: cz, uid: "onb-{{ after.id }}",
         task: {currentStep: 2, status: active, context: {note: "{{ after.note }}"}}}
  - name: done
    table: public.orders
    on: [update]
    when: after.status == 'done'
    actions:
      - {op: close, target: cz, uid: "onb-{{ after.id }}"}
"""
    env.write_config(
        rules=rules,
        extra_targets=f"""
cz:
  kind: copilotz
  base_url: {copilotz.url}
  username: bridge
  password: pw-123
  namespace: acme
""",
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, customer) VALUES (5, 'new', 'ann')")
    wait_until(lambda: len(copilotz.tasks()) == 1, timeout=30, message="copilotz task")
    copilotz.expire_tokens()
    env.sql("UPDATE orders SET status = 'step2', note = 'called' WHERE id = 5")
    env.sql("UPDATE orders SET status = 'done' WHERE id = 5")
    wait_until(
        lambda: next(iter(copilotz.tasks().values()))["status"] == "completed",
        timeout=30,
        message="closed",
    )
    task = next(iter(copilotz.tasks().values()))
    assert task["extId"] == "onb-5" and task["currentStep"] == 2
    assert task["context"] == {"customer": "ann", "note": "called"}
    ledger = copilotz.ledger()
    logins = [e for e in ledger if e["path"] == "/api/auth/login"]
    assert len(logins) >= 2, "logged in again after the token expired"
    assert logins[0]["body"]["username"] == "bridge"
    assert "pw-123" not in bridge.log_text()
    (post,) = [e for e in ledger if e["method"] == "POST" and e["path"] == "/rest/tasks"]
    assert post["headers"]["authorization"] == "Bearer ***"
    assert post["body"]["extId"] == "onb-5" and post["body"]["workflow"] == 1
    puts = [e for e in ledger if e["method"] == "PUT" and e["status"] == 200]
    assert [e["path"] for e in puts] == [f"/rest/tasks/{task['_id']}"] * 2
    assert puts[-1]["body"] == {"status": "completed"}


def _seed_workflow(fake: FakeWorkflow, entity: str, execution: str, flow: str) -> None:
    fake.seed_entity(
        {
            "_id": entity,
            "_schema": "opportunity",
            "workflows": {
                "def1": [
                    {
                        "id": execution,
                        "definition_id": "def1",
                        "status": "STARTED",
                        "task_id": "step-auto",
                        "task_execution_type": "AUTOMATION",
                    }
                ]
            },
        }
    )
    fake.seed_execution(
        {
            "id": execution,
            "flow": [
                {"id": "step-1", "name": "Intro", "type": "STEP", "status": "COMPLETED"},
                {
                    "id": "phase-1",
                    "name": "Research",
                    "type": "SECTION",
                    "steps": [
                        {
                            "id": "step-auto",
                            "name": "Clean Energy",
                            "type": "STEP",
                            "status": "PENDING",
                            "executionType": "AUTOMATION",
                            "automationConfig": {"flowId": flow},
                        },
                        {"id": "step-manual", "name": "Visit", "type": "STEP", "status": "PENDING"},
                    ],
                },
            ],
        }
    )


def _step(fake: FakeWorkflow, execution: str, step_id: str) -> dict[str, Any]:
    for item in fake.executions()[execution]["flow"]:
        for step in item.get("steps", [item]):
            if step["id"] == step_id:
                return dict(step)
    raise AssertionError(f"no step {step_id}")


def test_workflow_run_automation_and_complete_step(
    bridge_env: BridgeEnv, workflow: FakeWorkflow
) -> None:
    """run_automation: entity search, execution, step inside a SECTION, start, poll through
    `paused` to success, PATCH COMPLETED with the execution id; complete_step PATCHes a step."""
    env = bridge_env
    _seed_workflow(workflow, "ent-1", "exec-1", "flow-1")
    workflow.script("flow-1", ["in_progress", "paused", "success"])
    rules = """
rules:
  - name: automate
    table: public.orders
    on: [insert]
    actions:
      - {op: run_automation, target: wf, uid: "auto-{{ after.id }}",
         task: {entity_id: "{{ after.customer }}"}}
  - name: visit
    table: public.orders
    on: [update]
    when: after.status == 'visited'
    actions:
      - {op: complete_step, target: wf, uid: "visit-{{ after.id }}",
         task: {execution_id: "exec-1", step_id: step-manual}}
"""
    env.write_config(
        rules=rules,
        extra_targets=f"""
wf:
  kind: workflow
  base_url: {workflow.url}
  token: {TOKEN}
  poll_interval: 50ms
""",
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, customer) VALUES (1, 'new', 'ent-1')")
    wait_until(
        lambda: _step(workflow, "exec-1", "step-auto")["status"] == "COMPLETED",
        timeout=30,
        message="automation step completed",
    )
    step = _step(workflow, "exec-1", "step-auto")
    (started,) = workflow.automation_executions()
    assert step["automationConfig"]["executionId"] == started["id"]
    assert step["automationConfig"]["executionStatus"] == "success"
    ledger = workflow.ledger()
    assert [e["path"] for e in ledger if e["method"] == "POST"] == [
        "/v1/entity:search",
        "/v1/automation/executions",
    ]
    assert all(e["headers"]["authorization"] == "Bearer ***" for e in ledger)
    assert started["flow_id"] == "flow-1" and started["entity_id"] == "ent-1"
    env.sql("UPDATE orders SET status = 'visited' WHERE id = 1")
    wait_until(
        lambda: _step(workflow, "exec-1", "step-manual")["status"] == "COMPLETED",
        timeout=30,
        message="manual step completed",
    )


def test_generic_http_target(bridge_env: BridgeEnv, generic: FakeGeneric) -> None:
    """kind: http: create POSTs the task with an Idempotency-Key, keeps the returned id, and
    close uses it in the path."""
    env = bridge_env
    rules = """
rules:
  - name: ticket
    table: public.orders
    on: [insert]
    actions:
      - {op: create, target: tickets, uid: "t-{{ after.id }}",
         task: {title: "Order {{ after.id }}"}}
  - name: resolve
    table: public.orders
    on: [update]
    when: after.status == 'shipped'
    actions:
      - {op: close, target: tickets, uid: "t-{{ after.id }}"}
"""
    env.write_config(
        rules=rules,
        extra_targets=f"""
tickets:
  kind: http
  base_url: {generic.url}
  token: {TOKEN}
  idempotency_key: true
  ops:
    create: {{method: POST, path: /tasks, success: [201], remote_id: id}}
    close: {{method: POST, path: "/tasks/{{{{ remote_id }}}}/close", body: null}}
""",
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (9, 'paid')")
    env.sql("UPDATE orders SET status = 'shipped' WHERE id = 9")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 2, timeout=30, message="2 ops")
    create, close = generic.ledger()
    assert create["body"] == {"title": "Order 9"}
    assert create["headers"]["idempotency-key"] == env.outbox_rows("op = 'create'")[0]["op_id"]
    assert create["headers"]["authorization"] == "Bearer ***"
    (task,) = generic.tasks().values()
    assert close["path"] == f"/tasks/{task['id']}/close"


def test_humanlambdas_update_is_refused_by_validate_and_ambiguous_creates_are_logged(
    bridge_env: BridgeEnv, humanlambdas: FakeHumanLambdas
) -> None:
    """`validate` rejects an update to Human Lambdas, saying the API only creates; a create
    whose answer is lost is logged as possibly duplicated and retried (at-least-once)."""
    env = bridge_env
    hl = f"""
hl:
  kind: humanlambdas
  base_url: {humanlambdas.url}
  token: {TOKEN}
  org: acme
  queue: reviews
"""
    bad = """
rules:
  - name: upd
    table: public.orders
    actions:
      - {op: update, target: hl, uid: "o-{{ after.id }}", task: {data: {x: 1}}}
"""
    env.write_config(rules=bad, extra_targets=hl)
    out = env.bridge().run_cli("validate")
    assert out.returncode == 1
    assert "does not support op 'update'" in out.stdout + out.stderr
    assert "can only create tasks" in out.stdout + out.stderr

    good = bad.replace("op: update", "op: create")
    env.write_config(rules=good, extra_targets=hl)
    humanlambdas.add_fault({"method": "POST", "drop_after_apply": True, "times": 1})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (1, 'new')")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 1, timeout=30, message="sent")
    (warning,) = bridge.events("op.possibly_duplicated")
    assert warning["uid"] == "o-1" and warning["level"] == "warning"
    assert len(humanlambdas.tasks()) == 2, "the API has no external id: at-least-once"
