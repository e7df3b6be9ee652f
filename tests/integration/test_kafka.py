"""The Kafka source against a real Kafka-protocol broker: Debezium records to tasks, poison
records dead-lettered, kill -9 while consuming, two bridges sharing a group, dry-run."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer

from task_bridge.targets.fragment import fragment_task_uuid
from task_bridge.testing.kafka import KafkaBroker
from tests.integration.conftest import BridgeEnv
from tests.support.bridge_proc import BridgeProcess
from tests.support.wait import wait_until

RULES = """
rules:
  - name: review
    table: public.orders
    on: [insert, update, snapshot]
    when: after.status == 'paid'
    actions:
      - op: upsert
        target: fragment
        uid: "order-{{ after.id }}"
        task: {fields: {title: "Order {{ after.id }}", amount: "{{ after.amount }}"}}
"""


def debezium(order_id: int, status: str = "paid", op: str = "c") -> tuple[bytes, bytes]:
    """A schemaless Debezium record (key, value) for a row of public.orders."""
    row = {"id": order_id, "status": status, "amount": f"{order_id}.50"}
    value = {
        "before": None,
        "after": row,
        "source": {
            "connector": "postgresql",
            "db": "app",
            "schema": "public",
            "table": "orders",
            "ts_ms": 1_767_225_600_000,
            "txId": 1000 + order_id,
            "lsn": 1234,
        },
        "op": op,
        "ts_ms": 1_767_225_600_500,
    }
    return json.dumps({"id": order_id}).encode(), json.dumps(value).encode()


@pytest.fixture
def producer(kafka_broker: KafkaBroker) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    yield producer
    producer.close()


def _send(producer: KafkaProducer, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()


def _kafka(broker: KafkaBroker, topic: str, group: str) -> str:
    return f"""
bootstrap_servers: "{broker.bootstrap}"
topics: [{topic}]
group_id: {group}
"""


def _tasks(env: BridgeEnv, ids: range) -> dict[str, Any]:
    tasks = env.fake.tasks()
    return {i: tasks.get(fragment_task_uuid(f"order-{i}")) for i in ids}


def test_poison_records_are_dead_lettered_and_good_ones_delivered(
    bridge_env: BridgeEnv, kafka_broker: KafkaBroker, producer: KafkaProducer
) -> None:
    """1,000 undecodable records interleaved with 300 good ones: every good one becomes its
    task, every poison one a dead entry with its reason and raw bytes; the bridge keeps going."""
    env = bridge_env
    topic = kafka_broker.create_topic(partitions=2)
    env.write_config(rules=RULES, kafka=_kafka(kafka_broker, topic, "poison"))
    bridge = env.bridge().start()
    poisons = [b"not json", b'{"payload": 1, "schema": 2}', b"[1, 2]", b'{"op": "x"}']
    records: list[tuple[bytes | None, bytes]] = []
    for n in range(1000):
        if n % 10 < 3:
            records.append(debezium(len(records) + 1))
        records.append((None, poisons[n % len(poisons)]))
    while sum(1 for key, _ in records if key is not None) < 300:
        records.append(debezium(len(records) + 1))
    good = sum(1 for key, _ in records if key is not None)
    _send(producer, topic, records)
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == good,
        timeout=90,
        message=f"{good} good records delivered",
    )
    wait_until(lambda: env.outbox_count("op = 'poison'") == 1000, timeout=30, message="poison")
    dead = env.outbox_rows("op = 'poison'")
    assert all(r["status"] == "dead" for r in dead)
    assert all(r["last_error"].startswith("poison message: ") for r in dead)
    reasons = {r["last_error"] for r in dead}
    assert any("not valid JSON" in reason for reason in reasons), reasons
    assert len(reasons) == 4, "one reason per kind of poison"
    raw = json.loads(dead[0]["payload"])
    assert raw["topic"] == topic and "value_b64" in raw and "offset" in raw
    assert bridge.alive()
    assert len(bridge.events("event.poison")) == 1000
    assert len([t for t in env.fake.tasks().values() if t]) == good


def test_kill_9_while_consuming_loses_and_duplicates_nothing(
    bridge_env: BridgeEnv, kafka_broker: KafkaBroker, producer: KafkaProducer
) -> None:
    """kill -9 mid-stream: after restart every record has exactly one operation in the
    outbox (none lost, none enqueued twice) and every task exists."""
    env = bridge_env
    topic = kafka_broker.create_topic(partitions=3)
    env.write_config(rules=RULES, kafka=_kafka(kafka_broker, topic, "crash"))
    total = 6000
    _send(producer, topic, [debezium(i) for i in range(1, total + 1)])
    bridge = env.bridge().start()
    wait_until(lambda: env.outbox_count() >= 500, timeout=60, message="consuming")
    bridge.kill9()
    assert env.outbox_count() < total, "killed while consuming"
    env.bridge().start()
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == total,
        timeout=120,
        message="every record delivered after the restart",
    )
    assert env.outbox_count() == total
    assert all(task is not None for task in _tasks(env, range(1, total + 1)).values())


def _owned(bridge: BridgeProcess) -> set[str]:
    """The partitions a bridge holds now, from its kafka.assigned / kafka.revoked log lines."""
    owned: set[str] = set()
    for event in bridge.logs():
        if event.get("event") == "kafka.assigned":
            owned |= set(event["partitions"])
        elif event.get("event") == "kafka.revoked":
            owned -= set(event["partitions"])
    return owned


def _upserts_per_task(env: BridgeEnv) -> Counter[str]:
    """How many times the fake received each task, alone or in a batch."""
    sent: Counter[str] = Counter()
    for request in env.fake.ledger():
        if request["method"] != "PUT":
            continue
        if request["path"] == "/tasks/batch":
            sent.update(str(item["uid"]) for item in request["body"]["items"])
        else:
            sent[request["path"].removeprefix("/tasks/")] += 1
    return sent


def test_two_bridges_sharing_a_group_and_an_outbox_take_over_exactly_once(
    bridge_env: BridgeEnv, kafka_broker: KafkaBroker, producer: KafkaProducer
) -> None:
    """Two bridges in one group with one Postgres outbox split the partitions; after kill -9 of
    one, the other takes its partitions and its undelivered work. Every record gives exactly one
    operation and one task; a request reaches the API twice only for an op the dead bridge had
    sent without recording the outcome, which the other reclaims from the dead one's claims."""
    bridge_env.outbox_url = f"{bridge_env.dsn}?schema=shared_outbox"
    env_a, env_b = bridge_env, bridge_env.sibling("b")
    topic = kafka_broker.create_topic(partitions=4)
    everything = {f"{topic}:{p}" for p in range(4)}
    concurrency = 8
    for env in (env_a, env_b):
        env.write_config(  # one op per request: a request sent twice is one op sent twice
            rules=RULES,
            kafka=_kafka(kafka_broker, topic, "pair"),
            concurrency=concurrency,
            target="batch_size: 1",
        )
    a, b = env_a.bridge().start(), env_b.bridge().start()
    wait_until(
        lambda: _owned(a) and _owned(b) and _owned(a) | _owned(b) == everything,
        timeout=60,
        message="both bridges hold partitions",
    )
    assert not _owned(a) & _owned(b)
    first = range(1, 6001)
    _send(producer, topic, [debezium(i) for i in first])
    wait_until(
        lambda: env_a.outbox_count("status = 'delivered'") >= 600,
        timeout=60,
        message="both bridges consuming and delivering",
    )
    a.kill9()
    assert env_a.outbox_count() < len(first), "killed while consuming"
    wait_until(lambda: _owned(b) == everything, timeout=60, message="b takes every partition")
    second = range(6001, 8001)
    _send(producer, topic, [debezium(i) for i in second])
    wait_until(
        lambda: env_b.outbox_count("status = 'delivered'") == len(first) + len(second),
        timeout=120,
        message="b delivers everything, a's leftovers included",
    )
    assert env_b.outbox_count() == len(first) + len(second), "one op per record"
    assert all(task is not None for task in _tasks(env_b, range(1, 8001)).values())
    requests = _upserts_per_task(env_b)
    assert len(requests) == len(first) + len(second)
    twice = [path for path, n in requests.items() if n > 1]
    reclaimed = sum(
        e["inflight_of_dead_bridges"] for e in b.logs() if e.get("event") == "outbox.reclaimed"
    )
    # a's inflight ops at the kill: up to `concurrency` being sent, as many claimed ahead and
    # fewer answered ones whose results were not committed yet (delivery.py); only the sent
    # ones can reach the API twice
    assert len(twice) <= reclaimed <= 3 * concurrency, (twice, reclaimed)


def test_broker_restart_under_a_running_bridge_loses_nothing(
    bridge_env: BridgeEnv, kafka_broker: KafkaBroker
) -> None:
    """The broker goes away mid-stream and comes back on the same address with its log: the
    bridge reconnects by itself and every record, before and after, has exactly one operation."""
    env = bridge_env
    topic = kafka_broker.create_topic(partitions=2)
    env.write_config(rules=RULES, kafka=_kafka(kafka_broker, topic, "restart"))
    before, after = range(1, 3001), range(3001, 4001)
    # (a producer left open across the restart leaks the sockets of its failed reconnects)
    with KafkaProducer(bootstrap_servers=kafka_broker.bootstrap) as producer:
        _send(producer, topic, [debezium(i) for i in before])
    bridge = env.bridge().start()
    wait_until(lambda: env.outbox_count() >= 300, timeout=60, message="consuming")
    kafka_broker.restart()
    with KafkaProducer(bootstrap_servers=kafka_broker.bootstrap) as producer:
        _send(producer, topic, [debezium(i) for i in after])
    wait_until(
        lambda: env.outbox_count("status = 'delivered'") == len(before) + len(after),
        timeout=120,
        message="every record delivered after the broker restart",
    )
    assert env.outbox_count() == len(before) + len(after)
    assert all(task is not None for task in _tasks(env, range(1, 4001)).values())
    assert bridge.alive()


def test_dry_run_accepts_a_debezium_message(bridge_env: BridgeEnv) -> None:
    """dry-run takes a Debezium value, or {"key", "value"}, like a pgoutput-shaped event."""
    env = bridge_env
    env.write_config(rules=RULES)
    key, value = debezium(7)
    for event in (json.loads(value), {"key": json.loads(key), "value": json.loads(value)}):
        out = env.bridge().run_cli("dry-run", "--event", "-", stdin=json.dumps(event))
        assert out.returncode == 0, out.stderr
        (op,) = json.loads(out.stdout)
        assert (op["uid"], op["payload"]["fields"]["amount"]) == ("order-7", "7.50")
    bad = env.bridge().run_cli("dry-run", "--event", "-", stdin='{"op": "c", "source": {}}')
    assert bad.returncode == 1 and "Debezium" in bad.stderr + bad.stdout
