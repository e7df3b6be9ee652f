"""Partitioned tables: published via the partition root, so rules on the partitioned table fire
for rows in every partition under its own name; a rule naming a partition is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import BridgeEnv
from tests.support.wait import wait_until

SHIPMENTS_DDL = (
    "CREATE TABLE public.shipments (id bigint, region text, status text,"
    " PRIMARY KEY (id, region)) PARTITION BY LIST (region)",
    "CREATE TABLE public.shipments_eu PARTITION OF public.shipments FOR VALUES IN ('eu')",
    "CREATE TABLE public.shipments_us PARTITION OF public.shipments FOR VALUES IN ('us')",
    "CREATE TABLE public.shipments_other PARTITION OF public.shipments DEFAULT",
)

SHIPMENT_RULES = """
rules:
  - name: track
    table: public.shipments
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "ship-{{ after.id }}"
        task:
          fields:
            title: "Shipment {{ after.id }}"
            table: "{{ schema }}.{{ table }}"
            region: "{{ after.region }}"
            key: "{{ key }}"
  - name: delivered
    table: public.shipments
    on: [update]
    when: after.status == 'delivered'
    actions:
      - {op: close, target: fragment, uid: "ship-{{ after.id }}"}
"""

PARTITION_RULE = """
rules:
  - name: eu_only
    table: public.shipments_eu
    on: [insert]
    actions:
      - {op: close, target: fragment, uid: "x-{{ after.id }}"}
"""

PARTITION_GLOB_RULE = PARTITION_RULE.replace("public.shipments_eu", "public.shipments_*")


def _task(env: BridgeEnv, uid: str) -> dict | None:
    return env.fake.tasks().get(fragment_task_uuid(uid))


@pytest.mark.parametrize("existing", [False, True], ids=["new-publication", "old-publication"])
def test_rule_on_partitioned_table_fires_for_every_partition(
    bridge_env: BridgeEnv, existing: bool
) -> None:
    """Rows in each of three partitions become tasks, with the partitioned table's name; an
    update in one partition closes its task. A publication made earlier without
    publish_via_partition_root (as bridges before this change made it) gets the setting and is
    never dropped (same oid)."""
    env = bridge_env
    env.sql(*SHIPMENTS_DDL)
    if existing:
        env.sql(f"CREATE PUBLICATION {env.slot} FOR TABLE public.shipments")
    oid_before = env.query("SELECT oid FROM pg_publication WHERE pubname = %s", (env.slot,))
    env.write_config(rules=SHIPMENT_RULES)
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    ((oid, via_root),) = env.query(
        "SELECT oid, pubviaroot FROM pg_publication WHERE pubname = %s", (env.slot,)
    )
    assert via_root
    if existing:
        assert [(oid,)] == oid_before, "the publication was dropped and made again"

    env.sql(
        "INSERT INTO shipments VALUES (1, 'eu', 'new'), (2, 'us', 'new'), (3, 'apac', 'new')",
        "UPDATE shipments SET status = 'delivered' WHERE id = 2",
    )
    wait_until(
        lambda: len(env.fake.tasks()) == 3 and (_task(env, "ship-2") or {}).get("status") == "DONE",
        timeout=30,
        message="3 tasks, ship-2 closed",
    )
    for uid, region in (("ship-1", "eu"), ("ship-2", "us"), ("ship-3", "apac")):
        task = _task(env, uid)
        assert task is not None
        assert task["fields"]["table"] == "public.shipments"
        assert task["fields"]["region"] == region
        assert task["fields"]["key"] == {"id": int(uid[-1]), "region": region}
    published = env.query(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
        (env.slot,),
    )
    assert published == [("public.shipments",)]


@pytest.mark.parametrize("rules", [PARTITION_RULE, PARTITION_GLOB_RULE], ids=["name", "glob"])
def test_rule_naming_a_partition_is_refused(bridge_env: BridgeEnv, rules: str) -> None:
    """`validate --check-source` reports a rule naming a partition (or a glob matching only
    partitions) with the partitioned table to name instead and exits 1; `run` refuses to
    start (exit 1) with the same advice and makes no publication."""
    env = bridge_env
    env.sql(*SHIPMENTS_DDL)
    config = env.write_config(rules=rules)
    result = subprocess.run(
        [sys.executable, "-m", "task_bridge", "validate", "--check-source", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rule 'eu_only'" in result.stdout
    assert "public.shipments_eu" in result.stdout
    assert "name that table" in result.stdout or "name 'public.shipments'" in result.stdout
    assert "Traceback" not in result.stderr

    bridge = env.bridge().start()
    assert bridge.proc is not None
    assert bridge.proc.wait(timeout=60) == 1
    text = bridge.log_text()
    assert "partition" in text and "public.shipments" in text, bridge.log_tail()
    assert "Traceback" not in text
    assert env.query("SELECT 1 FROM pg_publication WHERE pubname = %s", (env.slot,)) == []


def test_operator_all_tables_publication_without_root_setting_is_refused(
    bridge_env: BridgeEnv,
) -> None:
    """A `FOR ALL TABLES` publication made by an operator is never altered: without
    publish_via_partition_root, rules on a partitioned table would never fire, so `run` exits 1
    with the ALTER PUBLICATION to run; once the operator ran it, rows in every partition fire."""
    env = bridge_env
    env.sql(*SHIPMENTS_DDL, f"CREATE PUBLICATION {env.slot} FOR ALL TABLES")
    env.write_config(rules=SHIPMENT_RULES)
    bridge = env.bridge().start()
    assert bridge.proc is not None
    assert bridge.proc.wait(timeout=60) == 1
    error = bridge.events("shutdown")[-1]["error"]
    assert f'ALTER PUBLICATION "{env.slot}" SET (publish_via_partition_root = true)' in error
    assert "public.shipments" in error and "Traceback" not in bridge.log_text()
    assert env.query("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (env.slot,)) == [
        (False,)
    ]

    env.sql(f"ALTER PUBLICATION {env.slot} SET (publish_via_partition_root = true)")
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO shipments VALUES (1, 'eu', 'new'), (2, 'apac', 'new')")
    wait_until(lambda: len(env.fake.tasks()) == 2, timeout=30, message="2 tasks")
    assert {t["fields"]["table"] for t in env.fake.tasks().values()} == {"public.shipments"}
