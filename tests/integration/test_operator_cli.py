"""Operator surfaces: `bridge status`, `bridge outbox ...`, metrics and health endpoints."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from task_bridge.events import parse_lsn
from task_bridge.outbox.postgres import APPLICATION_NAME
from task_bridge.targets.fragment import fragment_task_uuid
from tests.integration.conftest import TOKEN, BridgeEnv
from tests.support.bridge_proc import BridgeProcess
from tests.support.wait import wait_until


def _cli(env: BridgeEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "task_bridge", *args, "-c", str(env.config_path)],
        capture_output=True,
        text=True,
    )


def _free_port() -> int:
    from task_bridge.testing.postgres import free_port

    return free_port()


@pytest.mark.parametrize("outbox", ["sqlite", "postgres"])
def test_status_and_outbox_commands(bridge_env: BridgeEnv, outbox: str) -> None:
    """status reports checkpoint, lag and counts; outbox list/show/discard/purge act on ops;
    the same with the outbox in a Postgres schema."""
    env = bridge_env
    if outbox == "postgres":
        env.outbox_url = f"{env.dsn}?schema=bridge_outbox"
    env.fake.add_fault({"contains": fragment_task_uuid("order-2"), "status": 422})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql(
        "INSERT INTO orders (id, status, created_at) SELECT g, 'paid', now()"
        " FROM generate_series(1, 3) g"
    )
    wait_until(
        lambda: (
            env.outbox_count("status = 'delivered'") == 2
            and env.outbox_count("status = 'dead'") == 1
        ),
        message="2 delivered, 1 dead",
    )
    bridge.terminate()

    status: dict[str, Any] = json.loads(_cli(env, "status").stdout)
    assert status["outbox"]["delivered"] == 2 and status["outbox"]["dead"] == 1
    assert status["checkpoint"] and status["slot_lag_bytes"] is not None

    listed = _cli(env, "outbox", "list", "--status", "dead")
    assert listed.returncode == 0 and "order-2" in listed.stdout and "422" in listed.stdout
    dead_id = listed.stdout.split()[0]
    shown = json.loads(_cli(env, "outbox", "show", dead_id).stdout)
    assert shown["uid"] == "order-2" and shown["http_status"] == 422
    assert _cli(env, "outbox", "show", "nope").returncode == 1

    assert _cli(env, "outbox", "discard", dead_id).returncode == 0
    assert env.outbox_count("status = 'dead'") == 0
    purged = _cli(env, "outbox", "purge", "--delivered", "--older-than", "0s")
    assert purged.returncode == 0 and "purged 2" in purged.stdout
    assert env.outbox_count() == 0
    assert _cli(env, "outbox", "purge").returncode == 1, "purge needs to be told what"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _stored_lsn(env: BridgeEnv) -> int | None:
    with sqlite3.connect(env.workdir / "outbox.db", timeout=30) as conn:
        row = conn.execute(
            "SELECT position FROM checkpoints WHERE source = ?", (f"postgres:{env.slot}",)
        ).fetchone()
    return parse_lsn(row[0]) if row else None


def test_metrics_health_and_readiness(bridge_env: BridgeEnv) -> None:
    """--metrics-port serves Prometheus metrics (events read per table, the stored checkpoint's
    LSN as a number, operations enqueued and delivered), /healthz and /readyz."""
    env = bridge_env
    env.write_config()
    port = _free_port()
    bridge = BridgeProcess(
        env.config_path, env.workdir / "bridge.log", ["--metrics-port", str(port)]
    )
    env.processes.append(bridge)
    bridge.start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, created_at) VALUES (1, 'paid', now())")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 1, message="delivered")
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    assert 'task_bridge_ops_delivered_total{target="fragment"} 1.0' in metrics
    assert "task_bridge_ops_enqueued_total 1.0" in metrics
    assert TOKEN not in metrics
    env.sql("INSERT INTO orders (id, status, created_at) VALUES (2, 'new', now())")
    events = ("task_bridge_events_total", (("table", "public.orders"),))
    wait_until(
        lambda: _samples(httpx.get(f"{base}/metrics").text).get(events) == 2.0,
        message="two events of public.orders counted (the second matches no rule)",
    )

    def position_is_the_stored_lsn() -> bool:
        gauge = _samples(httpx.get(f"{base}/metrics").text).get(
            ("task_bridge_checkpoint_position", ())
        )
        return bool(gauge) and gauge == _stored_lsn(env)

    wait_until(position_is_the_stored_lsn, message="checkpoint_position = the stored LSN")


def test_unreachable_database_exits_2_without_traceback(bridge_env: BridgeEnv) -> None:
    """A source that cannot be reached at start exits 2 with a clear message."""
    env = bridge_env
    real_dsn, env.dsn = env.dsn, f"postgresql://postgres@127.0.0.1:{_free_port()}/nope"
    try:
        env.write_config()
    finally:
        env.dsn = real_dsn
    result = subprocess.run(
        [sys.executable, "-m", "task_bridge", "run", "-c", str(env.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot connect" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_fake_api_command_serves_fragment_with_admin_endpoints() -> None:
    """`bridge fake-api` serves the Fragment fake with its ledger and fault endpoints."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "task_bridge", "fake-api", "--port", str(port), "--token", "tok"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "/api/v1" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}/api/v1"
        uid = fragment_task_uuid("demo")
        auth = {"Authorization": "Bearer tok"}
        assert (
            httpx.put(f"{base}/tasks/{uid}", json={"fields": {}}, headers=auth).status_code == 200
        )
        fault = {"method": "PATCH", "status": 503, "retry_after": 2, "times": 1}
        assert httpx.post(f"{base}/_admin/faults", json=fault).status_code == 204
        patched = httpx.patch(f"{base}/tasks/{uid}", json={"status": "DONE"}, headers=auth)
        assert patched.status_code == 503 and patched.headers["retry-after"] == "2"
        assert httpx.put(f"{base}/tasks/{uid}", json={}).status_code == 401
        ledger = httpx.get(f"{base}/_admin/ledger").json()
        assert [(e["method"], e["status"]) for e in ledger] == [
            ("PUT", 200),
            ("PATCH", 503),
            ("PUT", 401),
        ]
        assert httpx.get(f"{base}/_admin/tasks").json()[uid]["status"] == "TODO"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_unreachable_postgres_outbox_exits_2_without_traceback(bridge_env: BridgeEnv) -> None:
    """An outbox that cannot be reached exits 2 naming it, with its password masked."""
    env = bridge_env
    env.outbox_url = f"postgresql://postgres:pw-secret@127.0.0.1:{_free_port()}/nope"
    env.write_config()
    for args in (["run"], ["status"], ["outbox", "list"]):
        result = _cli(env, *args)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "cannot open outbox postgresql://postgres:***@127.0.0.1" in output
        assert "pw-secret" not in output and "Traceback" not in output


def test_losing_the_postgres_outbox_stops_the_bridge_with_exit_2(bridge_env: BridgeEnv) -> None:
    """When its outbox connections are cut, a running bridge stops (exit 2, no traceback) for
    its supervisor to restart it, rather than running on without an outbox."""
    env = bridge_env
    env.outbox_url = f"{env.dsn}?schema=lost_outbox"
    env.write_config()
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, created_at) VALUES (1, 'paid', now())")
    wait_until(lambda: env.outbox_count("status = 'delivered'") == 1, message="delivered")
    env.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE application_name = '{APPLICATION_NAME}'"
    )
    wait_until(lambda: not bridge.alive(), timeout=60, message="the bridge stops")
    assert bridge.proc is not None
    code = bridge.proc.returncode
    log = bridge.log_text()
    assert code == 2, log
    assert "Traceback" not in log and "never retrieved" not in log
    shutdown = bridge.events("shutdown")
    assert shutdown and "terminating connection" in shutdown[-1]["error"], log
