"""Rule chains end to end: steps in order, `steps.<id>` rendered at send time, on_error, kill -9."""

from __future__ import annotations

import json

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

CHAIN = """
rules:
  - name: chain
    table: public.orders
    on: [insert]
    actions:
      - id: first
        op: upsert
        target: fragment
        uid: "first-{{{{ after.id }}}}"
        task: {{fields: {{title: "first {{{{ after.id }}}}"}}}}
      - id: second
        op: upsert
        target: fragment
        uid: "second-{{{{ after.id }}}}"
        on_error: {on_error}
        task:
          fields:
            title: "second {{{{ after.id }}}}"
            parent: "{{{{ steps.first.response.uid }}}}"
            parent_status: "{{{{ steps.first.status }}}}"
      - op: close
        target: fragment
        uid: "first-{{{{ after.id }}}}"
        {third_when}
"""


def _chain(on_error: str = "retry", third_when: str = "when: steps.second.ok") -> str:
    return CHAIN.format(on_error=on_error, third_when=third_when)


def _applied_requests(env: BridgeEnv) -> list[tuple[str, str]]:
    """(method, task uuid) of every request the fake applied, in the order it applied them
    (batch items one by one)."""
    out = []
    for entry in env.fake.ledger():
        if not entry["applied"]:
            continue
        if entry["path"] == "/tasks/batch":
            out += [(entry["method"], item["uid"]) for item in entry["body"]["items"]]
        else:
            out.append((entry["method"], entry["uid"]))
    return out


def _applied(env: BridgeEnv, uid: str) -> list[str]:
    """Methods of the requests the fake applied to one task (batches included)."""
    task = fragment_task_uuid(uid)
    return [method for method, applied_to in _applied_requests(env) if applied_to == task]


def test_three_steps_run_in_order_with_the_earlier_responses(bridge_env: BridgeEnv) -> None:
    """Step 2 carries step 1's response id and status; step 3 runs because step 2 succeeded."""
    env = bridge_env
    env.write_config(rules=_chain())
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (1, 'new'), (2, 'new')")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 6, timeout=30, message="6 ops")
    tasks = env.fake.tasks()
    for n in (1, 2):
        first, second = fragment_task_uuid(f"first-{n}"), fragment_task_uuid(f"second-{n}")
        assert tasks[second]["fields"] == {
            "title": f"second {n}",
            "parent": first,
            "parent_status": 200,
        }
        assert tasks[first]["status"] == "DONE"
        assert _applied(env, f"first-{n}") == ["PUT", "PATCH"]
        # one chain's steps reach the API one after another (two chains interleave freely)
        steps = [("PUT", first), ("PUT", second), ("PATCH", first)]
        assert [r for r in _applied_requests(env) if r in steps] == steps


def test_on_error_skip_goes_on_and_later_steps_see_the_failure(bridge_env: BridgeEnv) -> None:
    """With on_error: skip a dead step 2 does not stop the chain: step 3 runs, and a step 3
    guarded by `steps.second.ok` is skipped instead."""
    env = bridge_env
    env.write_config(rules=_chain("skip", third_when=""))
    env.fake.add_fault({"contains": fragment_task_uuid("second-1"), "status": 400})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (1, 'new')")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 2, timeout=30, message="2 ops")
    assert env.outbox_count("status = 'dead'") == 1
    assert env.fake.tasks()[fragment_task_uuid("first-1")]["status"] == "DONE"
    bridge.terminate()

    env.write_config(rules=_chain("skip"))
    env.fake.add_fault({"contains": fragment_task_uuid("second-2"), "status": 400})
    env.bridge().start().wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (2, 'new')")
    wait_until(lambda: env.outbox_count("status = 'skipped'") == 1, timeout=30, message="skip")
    skipped = env.outbox_rows("status = 'skipped'")[0]
    assert skipped["uid"] == "first-2" and skipped["op"] == "close"
    assert env.fake.tasks()[fragment_task_uuid("first-2")]["status"] == "TODO"


def test_on_error_stop_skips_the_rest_and_retry_waits_for_a_redrive(bridge_env: BridgeEnv) -> None:
    """on_error: stop marks the steps after a dead one skipped; with retry (the default) they
    wait, and `bridge outbox retry` of the dead step lets the chain finish."""
    env = bridge_env
    env.write_config(rules=_chain("stop", third_when=""))
    env.fake.add_fault({"contains": fragment_task_uuid("second-1"), "status": 400, "times": 1})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (1, 'new')")
    wait_until(lambda: env.outbox_count("status = 'skipped'") == 1, timeout=30, message="stop")
    assert env.outbox_count("status = 'dead'") == 1
    assert env.fake.tasks()[fragment_task_uuid("first-1")]["status"] == "TODO"
    bridge.terminate()

    env.write_config(rules=_chain("retry", third_when=""))
    env.fake.add_fault({"contains": fragment_task_uuid("second-2"), "status": 400, "times": 1})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (2, 'new')")
    wait_until(lambda: env.outbox_count("status = 'dead'") == 2, timeout=30, message="dead")
    assert env.outbox_count("status = 'waiting'") == 1
    dead = env.outbox_rows("status = 'dead' AND uid = 'second-2'")[0]
    assert bridge.run_cli("outbox", "retry", dead["op_id"]).returncode == 0
    wait_until(
        lambda: env.fake.tasks()[fragment_task_uuid("first-2")]["status"] == "DONE",
        timeout=30,
        message="chain finished after the redrive",
    )


def test_kill_between_steps_reruns_nothing_already_delivered(bridge_env: BridgeEnv) -> None:
    """kill -9 while step 2 is in flight: after restart step 1 is not sent again, steps 2 and
    3 complete."""
    env = bridge_env
    env.write_config(rules=_chain())
    second = fragment_task_uuid("second-1")
    env.fake.add_fault({"contains": second, "latency_ms": 5000, "times": 1})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status) VALUES (1, 'new')")
    wait_until(lambda: env.fake.inflight == 1, timeout=30, message="step 2 in flight")
    assert env.outbox_count("status = 'delivered'") == 1
    bridge.kill9()
    env.bridge().start()
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 3, timeout=30, message="3 ops")
    assert _applied(env, "first-1") == ["PUT", "PATCH"]
    assert env.fake.tasks()[fragment_task_uuid("first-1")]["status"] == "DONE"
    assert env.fake.tasks()[second]["fields"]["parent"] == fragment_task_uuid("first-1")


def test_dry_run_shows_the_chain_and_what_renders_at_send_time(bridge_env: BridgeEnv) -> None:
    """dry-run lists the chain's steps in order; a step reading steps.* shows its templates
    and which steps it reads instead of a payload."""
    env = bridge_env
    env.write_config(rules=_chain())
    event = {"op": "insert", "table": "public.orders", "after": {"id": 3, "status": "new"}}
    out = env.bridge().run_cli("dry-run", "--event", "-", stdin=json.dumps(event))
    assert out.returncode == 0, out.stderr
    ops = json.loads(out.stdout)
    assert [(o["op"], o["uid"], o["chain_step"]) for o in ops] == [
        ("upsert", "first-3", "first"),
        ("upsert", "second-3", "second"),
        ("close", "first-3", None),
    ]
    assert ops[0]["payload"] == {"fields": {"title": "first 3"}}
    deferred = ops[1]["payload"]
    assert deferred["rendered_at_send_time"] and deferred["reads_steps"] == ["first"]
    assert deferred["task"]["fields"]["parent"] == "{{ steps.first.response.uid }}"
    assert ops[2]["payload"]["when"] == "steps.second.ok"
    assert env.fake.ledger() == []
