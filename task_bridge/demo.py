"""`make demo`: the whole path on embedded defaults, in under a minute.

A throwaway Postgres cluster (or `$DATABASE_URL`), the fake Fragment API, the example rules in
`rules/`, a short scripted workload on `public.orders`; prints the tasks created and closed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from task_bridge.fakes.fragment import FakeFragment
from task_bridge.testing.postgres import TempCluster

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
DEADLINE_S = 45.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS public.orders (
    id          bigint PRIMARY KEY,
    status      text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    customer    text,
    tags        text[],
    meta        jsonb
);
ALTER TABLE public.orders REPLICA IDENTITY FULL;
"""

WORKLOAD = [
    "INSERT INTO orders (id, status, amount, customer, tags, meta) VALUES"
    " (1, 'new', 120.50, 'Ada', '{vip}', '{\"channel\": \"web\"}'),"
    " (2, 'new', 15.00, 'Grace', '{}', NULL),"
    " (3, 'new', 999.99, 'Linus', '{bulk,b2b}', '{\"channel\": \"api\"}')",
    "UPDATE orders SET status = 'paid' WHERE id IN (1, 2, 3)",
    "UPDATE orders SET status = 'shipped' WHERE id = 1",
    "DELETE FROM orders WHERE id = 2",
]


def _wait(probe: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def _write_config(workdir: Path, dsn: str, fake_url: str) -> Path:
    config = workdir / "bridge.yaml"
    config.write_text(
        f"""source:
  postgres:
    dsn: "{dsn}"
    slot: demo_bridge
    publication: demo_bridge
outbox:
  url: sqlite:///outbox.db
delivery:
  concurrency: 8
  retry: {{initial_backoff: 100ms, max_backoff: 2s}}
targets:
  fragment:
    kind: fragment
    base_url: {fake_url}
    token: ${{FRAGMENT_TOKEN}}
rules: {RULES_DIR / "fragment.yaml"}
""",
        encoding="utf-8",
    )
    return config


def run_demo(dsn: str, workdir: Path) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE orders")
    token = "demo-token"
    with FakeFragment(token=token) as fake:
        config = _write_config(workdir, dsn, fake.url)
        env = {**os.environ, "FRAGMENT_TOKEN": token}
        log_path = workdir / "bridge.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "task_bridge", "run", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                _wait(
                    lambda: b"source.started" in log_path.read_bytes() or proc.poll() is not None,
                    "the bridge to start",
                )
                if proc.poll() is not None:
                    print(log_path.read_text(), file=sys.stderr)
                    return 1
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for statement in WORKLOAD:
                        print(f"sql> {statement}")
                        conn.execute(statement)
                _wait(lambda: _settled(fake.tasks()), "tasks to settle at the fake API")
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=30)
        _print_tasks(fake.tasks())
        print(f"bridge exited with {code}; log: {log_path}")
        return 0 if code == 0 else 1


def _settled(tasks: dict[str, Any]) -> bool:
    done = [t for t in tasks.values() if t.get("status") == "DONE"]
    return len(tasks) == 3 and len(done) == 2


def _print_tasks(tasks: dict[str, Any]) -> None:
    print(f"\n{len(tasks)} tasks at the fake Fragment API:")
    for uid, task in sorted(
        tasks.items(), key=lambda kv: str(kv[1].get("fields", {}).get("title"))
    ):
        fields = task.get("fields", {})
        print(
            f"  {uid}  {task.get('status'):5}  {fields.get('title')}  amount={fields.get('amount')}"
            f"  due_at={task.get('due_at')}"
        )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bridge-demo-") as tmp:
        workdir = Path(tmp)
        if os.environ.get("DATABASE_URL"):
            return run_demo(os.environ["DATABASE_URL"], workdir)
        with TempCluster(workdir / "pg") as cluster:
            return run_demo(cluster.dsn(), workdir)


if __name__ == "__main__":
    sys.exit(main())
