"""The chaos campaign behind `make chaos`: task lifecycles through a bridge that is killed,
whose Postgres restarts, whose outbox connections are cut, against an API that fails at
random; then, per task at the fake API, nothing missing, nothing out of source order, nothing
after the close.

Everything runs on this machine: a throwaway Postgres cluster (source and outbox), the fake
Fragment API on loopback, the bridge as a child process restarted like a supervisor would.
The seed fixes the workload, the faults and the schedule of the disruptions (the machine's
timing still varies from run to run).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from task_bridge.fakes.fragment import FakeFragment
from task_bridge.outbox.postgres import APPLICATION_NAME
from task_bridge.targets.fragment import fragment_task_uuid
from task_bridge.testing.postgres import TempCluster
from tests.support.bridge_proc import BridgeProcess
from tests.support.wait import wait_until

TOKEN = "chaos-token"
BIG_TX_ROWS = 20_000
DDL = """
CREATE TABLE tasks (id bigint PRIMARY KEY, version int NOT NULL, status text NOT NULL);
"""
RULES = """
rules:
  - name: open
    table: public.tasks
    on: [insert]
    actions:
      - op: upsert
        target: fragment
        uid: "t-{{ after.id }}"
        task: {fields: {version: "{{ after.version }}"}}
  - name: change
    table: public.tasks
    on: [update]
    when: after.status != 'closed'
    actions:
      - op: update
        target: fragment
        uid: "t-{{ after.id }}"
        task: {fields: {version: "{{ after.version }}"}}
  - name: close
    table: public.tasks
    on: [update]
    when: after.status == 'closed'
    actions:
      - {op: close, target: fragment, uid: "t-{{ after.id }}"}
"""
FAULTS: list[dict[str, Any]] = [
    {"status": 503, "probability": 0.05},
    {"status": 429, "retry_after": "1", "probability": 0.02},
    {"latency_ms": 30, "probability": 0.05},
    {"drop_after_apply": True, "probability": 0.02},
]


@dataclass
class Summary:
    seed: int
    seconds: float
    tasks: int = 0
    changes: int = 0
    kills: int = 0
    pg_restarts: int = 0
    outbox_cuts: int = 0
    bridge_exits: int = 0
    requests: int = 0
    faults_hit: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "ok" if not self.problems else f"FAILED ({len(self.problems)} problems)"
        return (
            f"chaos: seed={self.seed} seconds={self.seconds:.0f} tasks={self.tasks}"
            f" changes={self.changes} kills={self.kills} pg_restarts={self.pg_restarts}"
            f" outbox_cuts={self.outbox_cuts} bridge_exits={self.bridge_exits}"
            f" requests={self.requests} faults_hit={self.faults_hit}"
            f" duplicates={self.duplicates}: {verdict}"
        )


@dataclass
class _Task:
    version: int = 1
    closed: bool = False


class Workload:
    """Task lifecycles in the source table: insert (version 1), updates (version + 1), then a
    close (same version); transactions of 1 to 50 changes, and one of BIG_TX_ROWS inserts.
    Every change it commits is recorded; a transaction whose commit is in doubt (the server
    went away) is checked against the table before it is recorded or retried."""

    def __init__(self, dsn: str, rng: random.Random, pause: threading.Event) -> None:
        self.dsn = dsn
        self.rng = rng
        self.pause = pause  # set while Postgres is being restarted
        self.tasks: dict[int, _Task] = {}
        self.changes = 0
        self.big_done = threading.Event()
        self._next_id = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the campaign
            self.error = exc

    def _loop(self) -> None:
        big_at = self.rng.randint(20, 60)  # after this many transactions
        n = 0
        while not self._stop.is_set():
            if self.pause.is_set():
                self._stop.wait(0.05)
                continue
            n += 1
            if n == big_at:
                self._commit(self._big())
                self.big_done.set()
            else:
                self._commit(self._small())
            self._stop.wait(self.rng.uniform(0.0, 0.03))

    def _big(self) -> list[tuple[str, tuple[Any, ...], int, _Task]]:
        first = self._next_id
        self._next_id += BIG_TX_ROWS
        return [("big", (first, first + BIG_TX_ROWS - 1), i, _Task()) for i in range(BIG_TX_ROWS)]

    def _small(self) -> list[tuple[str, tuple[Any, ...], int, _Task]]:
        """A transaction's planned changes: (kind, params, task id, task state after)."""
        plan: list[tuple[str, tuple[Any, ...], int, _Task]] = []
        touched: dict[int, _Task] = {}
        open_ids = [i for i, t in self.tasks.items() if not t.closed]
        for _ in range(self.rng.choice([1, 1, 1, 2, 5, 10, 50])):
            if open_ids and self.rng.random() < 0.7:
                task_id = self.rng.choice(open_ids)
                state = touched.get(task_id) or self.tasks[task_id]
                if state.closed:
                    continue
                closing = self.rng.random() < 0.25  # a close keeps the version
                after = _Task(state.version + (0 if closing else 1), closing)
                status = "closed" if after.closed else "open"
                plan.append(
                    (
                        "UPDATE tasks SET version = %s, status = %s WHERE id = %s",
                        (after.version, status, task_id),
                        task_id,
                        after,
                    )
                )
            else:
                task_id = self._next_id
                self._next_id += 1
                after = _Task()
                plan.append(
                    ("INSERT INTO tasks VALUES (%s, 1, 'open')", (task_id,), task_id, after)
                )
            touched[task_id] = after
        return plan

    def _commit(self, plan: list[tuple[str, tuple[Any, ...], int, _Task]]) -> None:
        if not plan:
            return
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, connect_timeout=5, options=DURABLE) as conn:
                    if plan[0][0] == "big":
                        first, last = plan[0][1]
                        conn.execute(
                            "INSERT INTO tasks SELECT g, 1, 'open'"
                            " FROM generate_series(%s::bigint, %s::bigint) g",
                            (first, last),
                        )
                    else:
                        for statement, params, _, _ in plan:
                            conn.execute(statement, params)
                    conn.commit()
            except psycopg.OperationalError:
                if self._committed(plan):
                    break
                self._stop.wait(0.2)
                continue
            break
        else:
            return
        for kind, params, task_id, after in plan:
            if kind == "big":
                self.tasks[params[0] + task_id] = after
            else:
                self.tasks[task_id] = after
        self.changes += len(plan)

    def _committed(self, plan: list[tuple[str, tuple[Any, ...], int, _Task]]) -> bool:
        """After a lost connection: did the transaction commit? (its last change is there)"""
        kind, params, task_id, after = plan[-1]
        row_id = params[1] if kind == "big" else task_id
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                    row = conn.execute(
                        "SELECT version, status FROM tasks WHERE id = %s", (row_id,)
                    ).fetchone()
            except psycopg.OperationalError:
                self._stop.wait(0.2)
                continue
            if row is None:
                return False
            return bool(row[0] == after.version and (row[1] == "closed") == after.closed)
        return False


def _version(entry: dict[str, Any], task: str) -> Any:
    """The version a ledger entry carries for `task` ('close' for a close)."""
    body = entry["body"]
    if entry["path"] == "/tasks/batch":
        return next((i["fields"].get("version") for i in body["items"] if i["uid"] == task), None)
    if body.get("status") == "DONE":
        return "close"
    return body.get("fields", {}).get("version")


def _by(run: _Run | None, entry: dict[str, Any]) -> str:
    """Which bridge sent a request, when, and whether the fake was done with it only after
    that bridge had ended."""
    if run is None:
        return "no bridge running"
    late = run.ended is not None and entry["done"] > run.ended
    at = f"+{entry['t'] - run.started:.3f}s"
    return f"bridge#{run.number} {at}" + (" done after it ended" if late else "")


DURABLE = "-c synchronous_commit=on"
"""The workload's commits: the test cluster runs with synchronous_commit=off, where an
immediate stop loses commits the client saw succeed."""


@dataclass
class _Run:
    """One bridge process of the campaign: when it ran and how it ended (for the explanation
    of a problem: which bridge sent a request, and whether the fake applied it afterwards)."""

    number: int
    proc: BridgeProcess
    started: float
    ended: float | None = None
    """When it was seen dead: exact after a kill, an upper bound after an exit."""
    end: str = ""

    def finish(self, how: str) -> None:
        if self.ended is None:
            self.ended = time.time()
            self.end = how

    def sent(self, t: float) -> bool:
        return self.started <= t and (self.ended is None or t <= self.ended)

    def describe(self) -> str:
        ended = "running" if self.ended is None else f"{self.ended - self.started:.2f}s {self.end}"
        return f"bridge#{self.number} pid {self.proc.pid} at {self.started:.3f}: {ended}"


class Campaign:
    def __init__(self, seconds: float, seed: int, workdir: Path) -> None:
        self.seconds = seconds
        self.seed = seed
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.summary = Summary(seed, seconds)
        self.runs: list[_Run] = []

    def run(self) -> Summary:
        with TempCluster() as cluster, FakeFragment(token=TOKEN) as fake:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE chaos")
            dsn = cluster.dsn("chaos")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(DDL)
            fake.rng.seed(self.seed)
            for fault in FAULTS:
                fake.add_fault(fault)
            config = self._config(dsn, fake.url)
            self._disrupt(cluster, dsn, fake, config)
        return self.summary

    def _config(self, dsn: str, api: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules.yaml").write_text(RULES)
        path = self.workdir / "bridge.yaml"
        path.write_text(
            f"""source:
  postgres: {{dsn: "{dsn}", slot: chaos, publication: chaos, status_interval: 500ms}}
outbox:
  url: "{dsn}?schema=chaos_outbox"
delivery:
  concurrency: 16
  timeout: 2s
  shutdown_grace: 5s
  retry: {{initial_backoff: 50ms, max_backoff: 1s, max_attempts: 1000, max_age: 1h}}
targets:
  fragment: {{kind: fragment, base_url: "{api}", token: {TOKEN}}}
rules: rules.yaml
"""
        )
        return path

    def _bridge(self, config: Path) -> BridgeProcess:
        for run in self.runs:  # one bridge at a time, as one supervisor runs it
            if not run.proc.alive():
                code = run.proc.proc.returncode if run.proc.proc is not None else None
                run.finish(f"exit {code}")
            assert run.ended is not None, f"{run.describe()} still runs"
        proc = BridgeProcess(config, self.workdir / "bridge.log")
        proc.log_level = "info"
        started = time.time()
        proc.start()
        self.runs.append(_Run(len(self.runs), proc, started))
        return proc

    def _disrupt(self, cluster: TempCluster, dsn: str, fake: FakeFragment, config: Path) -> None:
        pause = threading.Event()
        workload = Workload(dsn, random.Random(self.seed + 1), pause)
        bridge = self._bridge(config)
        bridge.wait_for_log("source.started", timeout=60)
        workload.start()
        deadline = time.monotonic() + self.seconds
        big_killed = False
        try:
            while time.monotonic() < deadline:
                if not bridge.alive():  # exited by itself (outbox lost...): the supervisor
                    self.summary.bridge_exits += 1
                    bridge = self._bridge(config)
                if workload.big_done.is_set() and not big_killed:
                    big_killed = True  # once: kill while the big transaction is ingested
                    time.sleep(self.rng.uniform(0.1, 1.0))
                    bridge = self._kill(bridge, config)
                    continue
                time.sleep(self.rng.uniform(0.5, 3.0))
                roll = self.rng.random()
                if roll < 0.55:
                    bridge = self._kill(bridge, config)
                elif roll < 0.75:
                    self._restart_postgres(cluster, pause)
                elif roll < 0.9:
                    self._cut_outbox(dsn)
        finally:
            workload.stop()
        if workload.error is not None:
            raise workload.error
        fake.clear_faults()
        bridge = self._drain(dsn, bridge, config)
        bridge.terminate()
        self.runs[-1].finish("SIGTERM")
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT id, version, status FROM tasks").fetchall()
        # the table is the truth (the workload commits with synchronous_commit=on, so it is
        # also what the workload saw succeed; the cluster's default is off)
        final = {task_id: _Task(version, status == "closed") for task_id, version, status in rows}
        self.summary.changes = workload.changes
        self._check(final, fake)
        self._explain(dsn, fake)

    def _explain(self, dsn: str, fake: FakeFragment) -> None:
        """For the first tasks with a problem: their source row, outbox ops and requests."""
        ids = sorted({p.split()[1] for p in self.summary.problems if p.startswith("task t-")})
        with psycopg.connect(dsn, autocommit=True) as conn:
            for uid in ids[:3]:
                row = conn.execute(
                    "SELECT version, status FROM tasks WHERE id = %s", (int(uid[2:]),)
                ).fetchone()
                ops = conn.execute(
                    "SELECT seq, op, status, attempts, position, payload FROM chaos_outbox.ops"
                    " WHERE uid = %s ORDER BY seq",
                    (uid,),
                ).fetchall()
                task = fragment_task_uuid(uid)
                entries = [
                    e for e in fake.ledger() if e["uid"] == task or task in json.dumps(e["body"])
                ]
                senders = {e["seq"]: self._sender(e["t"]) for e in entries}
                requests = [
                    (
                        e["seq"],
                        e["method"],
                        _version(e, task),
                        e["status"],
                        e["applied"],
                        e["dropped"],
                        f"port {e['peer']}",
                        _by(senders[e["seq"]], e),
                    )
                    for e in entries
                ]
                runs = {r.number: r for r in senders.values() if r is not None}
                self.summary.problems.append(
                    f"{uid}: source {row}; outbox {ops}; requests {requests}; bridges"
                    f" {[r.describe() for r in runs.values()]}"
                )

    def _sender(self, t: float) -> _Run | None:
        """The bridge that was running when a request arrived (one runs at a time)."""
        return next((r for r in self.runs if r.sent(t)), None)

    def _kill(self, bridge: BridgeProcess, config: Path) -> BridgeProcess:
        if bridge.alive():
            bridge.kill9()
            self.runs[-1].finish("kill -9")
            self.summary.kills += 1
        return self._bridge(config)

    def _restart_postgres(self, cluster: TempCluster, pause: threading.Event) -> None:
        pause.set()
        try:
            cluster.stop(self.rng.choice(["fast", "immediate"]))
            cluster.start()
        finally:
            pause.clear()
        self.summary.pg_restarts += 1

    def _cut_outbox(self, dsn: str) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (APPLICATION_NAME,),
                )
        except psycopg.OperationalError:
            return
        self.summary.outbox_cuts += 1

    def _drain(self, dsn: str, bridge: BridgeProcess, config: Path) -> BridgeProcess:
        """Until the bridge has read the whole slot and delivered every op (restarted when a
        last disruption stops it, as its supervisor would)."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            end = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        running = [bridge]

        def drained() -> bool:
            if not running[-1].alive():
                self.summary.bridge_exits += 1
                if self.summary.bridge_exits > 1000:
                    raise AssertionError(f"the bridge keeps exiting:\n{bridge.log_tail()}")
                running.append(self._bridge(config))
                return False
            with psycopg.connect(dsn, autocommit=True) as conn:
                caught_up = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots"
                    " WHERE slot_name = 'chaos'",
                    end,
                ).fetchone()
                left = conn.execute(
                    "SELECT count(*) FROM chaos_outbox.ops"
                    " WHERE status NOT IN ('delivered', 'dead', 'skipped')"
                ).fetchone()
            return bool(caught_up and caught_up[0] and left and left[0] == 0)

        wait_until(drained, timeout=600, interval=0.5, message="the bridge to drain")
        with psycopg.connect(dsn, autocommit=True) as conn:
            dead = conn.execute(
                "SELECT op_id, uid, last_error FROM chaos_outbox.ops WHERE status = 'dead'"
            ).fetchall()
        for op_id, uid, error in dead[:20]:
            self.summary.problems.append(f"dead op {op_id} ({uid}): {error}")
        return running[-1]

    def _check(self, final: dict[int, _Task], fake: FakeFragment) -> None:
        """Per task, from the fake's ledger (apply order): the versions never go back, nothing
        after the close, the final state is the source's; repeats are counted."""
        s = self.summary
        s.tasks = len(final)
        ledger = fake.ledger()
        s.requests = len(ledger)
        s.faults_hit = sum(1 for e in ledger if e["status"] != 200 or e["dropped"])
        history: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for entry in ledger:
            if not entry["applied"]:
                continue
            if entry["path"] == "/tasks/batch":
                for item in entry["body"]["items"]:
                    history[str(item["uid"])].append(("PUT", item["fields"]["version"]))
            elif entry["body"].get("status") == "DONE":
                history[entry["uid"]].append(("CLOSE", None))
            else:
                history[entry["uid"]].append((entry["method"], entry["body"]["fields"]["version"]))
        tasks = fake.tasks()
        for task_id, expected in final.items():
            uuid = fragment_task_uuid(f"t-{task_id}")
            applied = history.get(uuid, [])
            task = tasks.get(uuid)
            if task is None:
                s.problems.append(f"task t-{task_id} missing")
                continue
            versions = [v for kind, v in applied if kind != "CLOSE"]
            if versions != sorted(versions):
                s.problems.append(f"task t-{task_id} versions out of order: {versions}")
            if expected.closed:
                closes = [i for i, (k, _) in enumerate(applied) if k == "CLOSE"]
                after = [k for k, _ in applied[closes[0] :] if k != "CLOSE"] if closes else []
                if after:
                    s.problems.append(f"task t-{task_id}: {after} applied after its close")
                if task["status"] != "DONE":
                    s.problems.append(f"task t-{task_id} not closed")
            if task["fields"].get("version") != expected.version:
                s.problems.append(
                    f"task t-{task_id} at version {task['fields'].get('version')},"
                    f" source at {expected.version}"
                )
            s.duplicates += len(applied) - len(set(applied))
        s.problems = s.problems[:47]
