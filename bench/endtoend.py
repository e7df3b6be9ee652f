"""End-to-end figures with `bridge run` as a child process: latency, integrity, peak RSS, and
the event loop's lag (read from the bridge's /metrics)."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench.fakeproc import TOKEN, FakeProcess
from task_bridge.testing.postgres import free_port

DDL = """
CREATE TABLE IF NOT EXISTS lat (
    id bigint PRIMARY KEY, status text NOT NULL, stamp double precision NOT NULL, note text
);
"""
RULES = """
rules:
  - name: latency
    table: public.lat
    on: [insert, update]
    actions:
      - op: upsert
        target: fragment
        uid: "lat-{{ after.id }}"
        task: {fields: {title: "Row {{ after.id }}", status: "{{ after.status }}",
                        stamp: "{{ after.stamp }}"}}
"""


class BridgeRun:
    """`bridge run` in a child process with a config for `dsn`, rules and the fake."""

    def __init__(
        self,
        workdir: Path,
        dsn: str,
        fake: FakeProcess,
        slot: str,
        concurrency: int = 32,
        target_extra: str = "",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yaml").write_text(RULES)
        self.config = workdir / "bridge.yaml"
        self.config.write_text(
            f"""source:
  postgres: {{dsn: "{dsn}", slot: {slot}, publication: {slot}, status_interval: 1s}}
outbox: {{url: sqlite:///outbox.db}}
delivery: {{concurrency: {concurrency}, retry: {{initial_backoff: 100ms, max_backoff: 2s,
           max_attempts: 100000}}}}
targets:
  fragment: {{kind: fragment, base_url: "{fake.url}", token: "${{BENCH_TOKEN}}"{target_extra}}}
rules: rules.yaml
"""
        )
        self.log = workdir / "bridge.log"
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self._sampling = threading.Event()

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "task_bridge",
                    "run",
                    "-c",
                    str(self.config),
                    "--log-level",
                    "warning",
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "BENCH_TOKEN": TOKEN},
            )
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        assert self.proc is not None
        process = psutil.Process(self.proc.pid)
        while not self._sampling.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def wait_ready(self, dsn: str, slot: str) -> None:
        wait_for(lambda: _slot_active(dsn, slot), 60, "the bridge to attach to its slot")

    def stop(self) -> None:
        self._sampling.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss / 2**20

    def loop_lag_buckets(self) -> list[tuple[float, float]]:
        """The bridge's event-loop lag histogram now: (upper bound s, cumulative count)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            if family.name == "task_bridge_event_loop_lag_seconds":
                return [
                    (float(s.labels["le"]), s.value)
                    for s in family.samples
                    if s.name.endswith("_bucket")
                ]
        raise RuntimeError("the bridge's /metrics has no task_bridge_event_loop_lag_seconds")


def histogram_quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float:
    """The q-quantile of what a cumulative histogram counted between two readings, linear
    within a bucket (as Prometheus' `histogram_quantile`); NaN when it counted nothing."""
    deltas = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    if not deltas or deltas[-1][1] <= 0:
        return float("nan")
    rank = q * deltas[-1][1]
    lower, below = 0.0, 0.0
    for le, count in deltas:
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: report that bound
            return lower + (le - lower) * (rank - below) / (count - below) if count > below else le
        lower, below = le, count
    return lower


def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _slot_active(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return bool(row and row[0])


def steady_load(dsn: str, rate: int, seconds: float) -> dict[int, list[str]]:
    """`rate` changes/s for `seconds`: every 10 ms, insert a few rows and update the rows
    inserted 10 ms earlier, each statement its own transaction with its commit time stamped in
    the row. Returns the expected status sequence per id."""
    expected: dict[int, list[str]] = {}
    half = max(1, rate // 200)
    tick, next_id, previous = 0.01, 1, list[int]()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
        started = time.perf_counter()
        for k in range(int(seconds / tick)):
            delay = started + k * tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ids = list(range(next_id, next_id + half))
            next_id += half
            conn.execute(
                "INSERT INTO lat (id, status, stamp) SELECT g, 'new', %s"
                " FROM unnest(%s::bigint[]) g",
                (time.time(), ids),
            )
            expected.update((i, ["new"]) for i in ids)
            if previous:
                conn.execute(
                    "UPDATE lat SET status = 'paid', stamp = %s WHERE id = ANY(%s)",
                    (time.time(), previous),
                )
                for i in previous:
                    expected[i].append("paid")
            previous = ids
    return expected


def checksum(sequence: list[str]) -> str:
    return hashlib.sha256("\x1f".join(sequence).encode()).hexdigest()


def latency_and_integrity(
    ledger: list[dict[str, Any]], expected: dict[int, list[str]]
) -> tuple[list[float], bool]:
    """Latencies (ms, commit stamp -> arrival at the fake) and whether every UID received
    exactly its expected sequence of operations, in order."""
    latencies: list[float] = []
    seen: dict[str, list[str]] = defaultdict(list)
    for entry in sorted(ledger, key=lambda e: e["t"]):
        if entry["status"] != 200:
            continue
        body = entry.get("body") or {}
        items = body.get("items") if "items" in body else [{**body, "uid": entry["uid"]}]
        for item in items:
            fields = item.get("fields") or {}
            if "stamp" not in fields:
                continue
            latencies.append((entry["t"] - float(fields["stamp"])) * 1000)
            seen[str(item["uid"])].append(str(fields["status"]))
    from task_bridge.targets.fragment import fragment_task_uuid

    ok = len(seen) == len(expected) and all(
        checksum(seen.get(fragment_task_uuid(f"lat-{i}"), [])) == checksum(statuses)
        for i, statuses in expected.items()
    )
    return latencies, ok


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
