"""`make bench`: throughput, latency and memory against the physical limits, in one run.

Prints one table and writes bench/results/latest.json. Ratios compare figures measured in the
same run on the same machine (absolute numbers drift on a shared, noisy machine).
Sizes can be reduced for a quick look: BENCH_CHANGES, BENCH_SECONDS, BENCH_BIG_TX, BENCH_BACKLOG,
BENCH_PACING_OPS, BENCH_DELIVERY_OPS, BENCH_TRIALS (3: ingest and delivery are measured that many
times, alternating with their baselines; medians); BENCH_ONLY=ingest,delivery,latency,pacing,memory
runs a subset.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.delivery import delivery_rates
from bench.endtoend import (
    DDL,
    BridgeRun,
    histogram_quantile,
    latency_and_integrity,
    percentile,
    steady_load,
    wait_for,
)
from bench.fakeproc import FakeProcess
from bench.ingest import bridge_ingest_rate, prepare_slots, recvlogical_rate
from bench.workload import REJECT_RULE, TYPICAL_RULE, write_changes
from task_bridge.testing.postgres import TempCluster

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
PACING_PER_MIN = 60
PACING_BATCH = 100
SECTIONS = ("ingest", "delivery", "latency", "pacing", "memory")


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far, per kind (`/proc/stat`; None where there is none)."""
    try:
        with open("/proc/stat") as stat:
            return [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two readings: on a shared
    machine, the noise that the latency tail cannot be blamed on (field 8 of `/proc/stat`)."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return round(100 * spent[7] / sum(spent), 1) if sum(spent) else 0.0


def _outbox_count(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM ops").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def _memory(
    cluster: TempCluster,
    fake: FakeProcess,
    work: Path,
    backlog: int,
    big_tx: int,
    out: dict[str, Any],
) -> None:
    dsn = cluster.dsn()
    run = BridgeRun(work / "mem", dsn, fake, "mem", int(out["concurrency"]))
    run.start()
    try:
        run.wait_ready(dsn, "mem")
        outbox = work / "mem" / "outbox.db"
        fake.call("fault", {"status": 503})
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO lat (id, status, stamp) SELECT g, 'backlog', 0"
                " FROM generate_series(10000001, %s) g",
                (10_000_000 + backlog,),
            )
        wait_for(lambda: _outbox_count(outbox) >= backlog, 600, "the backlog in the outbox")
        fake.call("clear")
        drain_until = time.monotonic() + 20
        time.sleep(max(0.0, drain_until - time.monotonic()))
        out["peak_rss_mb_backlog"] = round(run.peak_rss_mb, 1)
        fake.call("fault", {"status": 503})
        run.peak_rss = 0
        before = _outbox_count(outbox)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO lat (id, status, stamp) SELECT g, 'big', 0"
                " FROM generate_series(20000001, %s) g",
                (20_000_000 + big_tx,),
            )
        wait_for(lambda: _outbox_count(outbox) >= before + big_tx, 1800, "the big transaction")
        out["peak_rss_mb_big_tx"] = round(run.peak_rss_mb, 1)
    finally:
        fake.call("clear")
        run.stop()


def _delivery(
    fake: FakeProcess, n: int, concurrency: int, trials: int, out: dict[str, Any]
) -> None:
    """The bridge's delivery and a bare httpx loop, back to back, `trials` times; the ratio is
    the median of the paired ratios (a noisy neighbour then hits both sides of a pair alike)."""
    print(
        f"[bench] delivery: {n} upserts at concurrency {concurrency}, {trials} trials", flush=True
    )
    runs = [delivery_rates(fake, n, concurrency) for _ in range(trials)]
    out["delivery_ops_per_s"] = round(statistics.median(r[0] for r in runs))
    out["bare_httpx_ops_per_s"] = round(statistics.median(r[1] for r in runs))
    out["delivery_ratio"] = round(statistics.median(r[0] / r[1] for r in runs), 3)
    out["delivery_batched_ops_per_s"] = round(statistics.median(r[2] for r in runs))
    out["delivery_trials"] = [round(r[0] / r[1], 3) for r in runs]


def _ingest(cluster: TempCluster, changes: int, trials: int, out: dict[str, Any]) -> None:
    """Raw slot reads and bridge ingest of the same changes, `trials` times each, alternating;
    medians (this machine is shared: single runs vary by +-15%)."""
    dsn = cluster.dsn()
    print(f"[bench] {changes} changes, {trials} trials of each reader ...", flush=True)
    names = [f"{kind}{n}" for n in range(trials) for kind in ("raw", "typical", "rejected")]
    prepare_slots(dsn, names)
    end = write_changes(dsn, changes)
    raw, typical, rejected = [], [], []
    for n in range(trials):
        raw.append(recvlogical_rate(cluster, f"raw{n}", changes, end))
        typical.append(bridge_ingest_rate(dsn, f"typical{n}", TYPICAL_RULE, changes))
        rejected.append(bridge_ingest_rate(dsn, f"rejected{n}", REJECT_RULE, changes))
    out["raw_changes_per_s"] = round(statistics.median(raw))
    out["ingest_changes_per_s"] = round(statistics.median(typical))
    out["ingest_ratio"] = round(out["ingest_changes_per_s"] / out["raw_changes_per_s"], 3)
    out["ingest_rejected_changes_per_s"] = round(statistics.median(rejected))
    out["ingest_trials"] = [round(r) for r in typical]


def _latency(
    cluster: TempCluster,
    fake: FakeProcess,
    work: Path,
    rate: int,
    seconds: int,
    out: dict[str, Any],
) -> None:
    """Commit -> arrival at the fake under a steady load; integrity of what arrived."""
    dsn = cluster.dsn()
    fake.call("reset")
    run = BridgeRun(work / "lat", dsn, fake, "lat", int(out["concurrency"]))
    run.start()
    try:
        run.wait_ready(dsn, "lat")
        ticks, lag_before = _cpu_ticks(), run.loop_lag_buckets()
        expected = steady_load(dsn, rate, seconds)
        lag_after = run.loop_lag_buckets()
        out["latency_cpu_steal_pct"] = _steal_pct(ticks, _cpu_ticks())
        # how late the bridge's event loop ran its 50 ms timer while the load was on
        out["event_loop_lag_p99_ms"] = round(
            1000 * histogram_quantile(0.99, lag_before, lag_after), 2
        )
        total = sum(len(v) for v in expected.values())
        wait_for(lambda: fake.call("items") >= total, 900, "every op at the fake")
        latencies, ok = latency_and_integrity(fake.call("ledger"), expected)
    finally:
        run.stop()
    for p in (50, 95, 99):
        out[f"latency_p{p}_ms"] = round(percentile(latencies, p), 1)
    out["integrity_ok"] = ok
    out["latency_ops"] = total


def _pacing(
    cluster: TempCluster, fake: FakeProcess, work: Path, ops: int, out: dict[str, Any]
) -> None:
    """Upserts to a target limited to 60/min (the fake enforces it): drain time, 429s."""
    dsn = cluster.dsn()
    fake.call("reset")
    fake.call("rate_limit", PACING_PER_MIN)
    run = BridgeRun(
        work / "pacing",
        dsn,
        fake,
        "pacing",
        int(out["concurrency"]),
        target_extra=f", rate_limit: {PACING_PER_MIN}/min, batch_size: {PACING_BATCH}",
    )
    run.start()
    try:
        run.wait_ready(dsn, "pacing")
        started = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO lat (id, status, stamp) SELECT g, 'paced', 0"
                " FROM generate_series(30000001, %s) g",
                (30_000_000 + ops,),
            )
        wait_for(lambda: fake.call("items") >= ops, 900, "every paced upsert at the fake")
        out["pacing_ops"] = ops
        out["pacing_drain_s"] = round(time.monotonic() - started, 1)
        out["pacing_429s"] = fake.call("rate_limited")
        requests_10k = -(-10_000 // PACING_BATCH)
        out["pacing_drain_s_10k_computed"] = round(requests_10k * 60 / PACING_PER_MIN, 1)
    finally:
        fake.call("rate_limit", None)
        run.stop()


def main() -> int:
    changes = _env("BENCH_CHANGES", 200_000)
    seconds = _env("BENCH_SECONDS", 30)
    rate = _env("BENCH_RATE", 2000)
    big_tx = _env("BENCH_BIG_TX", 1_000_000)
    backlog = _env("BENCH_BACKLOG", 100_000)
    # concurrency 8: httpx's AsyncClient throughput collapses at 32 connections here (note)
    n_delivery, concurrency = _env("BENCH_DELIVERY_OPS", 5000), _env("BENCH_CONCURRENCY", 8)
    pacing_ops = _env("BENCH_PACING_OPS", 1000)
    only = set(os.environ.get("BENCH_ONLY", ",".join(SECTIONS)).split(","))
    out: dict[str, Any] = {"changes": changes, "concurrency": concurrency}
    # synchronous_commit=on: the walsender only sends flushed WAL, so `off` (the test default)
    # would add up to wal_writer_delay (200 ms) to every latency figure
    settings = {"synchronous_commit": "on"}
    ticks = _cpu_ticks()
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        TempCluster(Path(tmp) / "pg", settings) as pg,
    ):
        work = Path(tmp)
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DDL)
        if "ingest" in only:
            _ingest(pg, changes, _env("BENCH_TRIALS", 3), out)
        fake = FakeProcess()
        try:
            if "delivery" in only:
                _delivery(fake, n_delivery, concurrency, _env("BENCH_TRIALS", 3), out)
            if "latency" in only:
                print(f"[bench] latency: {rate} changes/s for {seconds}s ...", flush=True)
                _latency(pg, fake, work, rate, seconds, out)
            if "pacing" in only:
                print(f"[bench] pacing: {pacing_ops} upserts at 60/min ...", flush=True)
                _pacing(pg, fake, work, pacing_ops, out)
            if "memory" in only:
                print(f"[bench] memory: {backlog} backlog, {big_tx}-row transaction", flush=True)
                _memory(pg, fake, work, backlog, big_tx, out)
        finally:
            fake.stop()
    out["cpu_steal_pct"] = _steal_pct(ticks, _cpu_ticks())
    _print(out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _print(out: dict[str, Any]) -> None:
    targets = {
        "ingest_changes_per_s": ">= 20000",
        "ingest_ratio": ">= 0.08",
        "delivery_ratio": ">= 0.7",
        "latency_p99_ms": "<= 50",
        "event_loop_lag_p99_ms": "<= 5",
        "pacing_429s": "== 0",
        "peak_rss_mb_big_tx": "<= 150",
        "peak_rss_mb_backlog": "<= 150",
        "integrity_ok": "true",
        "latency_cpu_steal_pct": "(noise: CPU taken by other guests)",
        "cpu_steal_pct": "(noise, whole run)",
    }
    print(f"\n{'figure':32} {'value':>14}  target")
    for key, value in out.items():
        print(f"{key:32} {value!s:>14}  {targets.get(key, '')}")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
