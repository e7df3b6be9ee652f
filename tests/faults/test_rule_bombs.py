"""Rules that would take the bridge down cost one operation each (G11): a memory bomb, a CPU
bomb and a 1 GB payload are dead-lettered with their reasons, a canary rule beside them is
delivered, and the process stays small."""

from __future__ import annotations

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

BOMB_RULES = """
rules:
  - name: memory
    table: public.orders
    on: [insert]
    actions:
      - {op: upsert, target: fragment, uid: "m-{{ after.id }}",
         task: {fields: {x: "{{ after.status * 10**9 }}"}}}
  - name: cpu
    table: public.orders
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "c-{{ after.id }}"
        task:
          fields:
            x: >-
              {% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}
  - name: payload
    table: public.orders
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "p-{{ after.id }}"
        task: {fields: {x: "{% for i in range(1000) %}{{ after.note }}{% endfor %}"}}
  - name: canary
    table: public.orders
    on: [insert]
    actions:
      - {op: upsert, target: fragment, uid: "ok-{{ after.id }}", task: {fields: {t: "ok"}}}
"""


def test_rule_bombs_dead_letter_one_op_each_and_the_canary_is_delivered(
    bridge_env: BridgeEnv,
) -> None:
    """Three rows: per row the three bombs go dead (reason naming the limit), the canary is
    delivered; peak RSS stays under 300 MB."""
    env = bridge_env
    env.write_config(rules=BOMB_RULES)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders (id, status, note)"
        " SELECT g, 'paid', repeat('n', 1000000) FROM generate_series(1, 3) g"
    )

    def settled() -> bool:
        bridge.sample_rss()
        return env.outbox_count("status IN ('dead', 'delivered')") == 12

    wait_until(settled, timeout=120, message="12 ops dead or delivered")
    bridge.terminate()
    dead = env.outbox_rows("status = 'dead'")
    assert sorted(r["rule"] for r in dead) == ["cpu"] * 3 + ["memory"] * 3 + ["payload"] * 3
    assert all("limit" in r["last_error"] for r in dead), [r["last_error"] for r in dead]
    tasks = env.fake.tasks()
    assert all(fragment_task_uuid(f"ok-{i}") in tasks for i in (1, 2, 3))
    assert bridge.peak_rss < 300 * 2**20, f"peak RSS {bridge.peak_rss / 2**20:.0f} MB"
