"""Slot read rates: pg_recvlogical's raw read vs the bridge's WAL -> rules -> outbox ingest."""

from __future__ import annotations

import logging
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from task_bridge.app import tune_process
from task_bridge.events import format_lsn
from task_bridge.ingest import Ingest
from task_bridge.observability import Metrics
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.rules.engine import RuleEngine
from task_bridge.rules.loader import load_rules
from task_bridge.sources.postgres.source import PostgresSource
from task_bridge.testing.postgres import TempCluster, find_bindir
from task_bridge.yamlsrc import load_yaml_text

PUBLICATION = "bench"


class _AnyTarget:
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, object]) -> list[str]:
        return []


def prepare_slots(dsn: str, slots: list[str]) -> None:
    from bench.workload import DDL

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE bench")
        for slot in slots:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def recvlogical_rate(cluster: TempCluster, slot: str, changes: int, end_lsn: int) -> float:
    """changes/s for pg_recvlogical reading the slot to `end_lsn` into /dev/null."""
    cmd = [
        str(find_bindir() / "pg_recvlogical"),
        "-d",
        cluster.dsn(),
        "--slot",
        slot,
        "--start",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={PUBLICATION}",
        "--endpos",
        format_lsn(end_lsn),
        "-f",
        "/dev/null",
        "--no-loop",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return changes / (time.perf_counter() - started)


def bridge_ingest_rate(dsn: str, slot: str, rules_yaml: str, changes: int) -> float:
    """changes/s through decode -> rules -> SQLite outbox commit, for `changes` events."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        doc = load_yaml_text(rules_yaml, "bench-rules.yaml")
        ruleset = load_rules(
            doc.data["rules"],
            base_dir=Path(tmp),
            config_file="bench-rules.yaml",
            config_doc=doc,
            targets={"fragment": _AnyTarget()},
        )
        outbox = SqliteOutbox(str(Path(tmp) / "outbox.db"))
        logger = logging.getLogger("bench")
        logger.setLevel(logging.WARNING)
        source = PostgresSource(dsn, slot, PUBLICATION, ["public.bench"], logger=logger)
        ingest = Ingest(source, RuleEngine(ruleset), outbox, logger=logger, metrics=Metrics())
        tune_process()  # as `task-bridge run` does
        stop = threading.Event()
        started = time.perf_counter()
        thread = threading.Thread(target=ingest.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 600
        while ingest.stats.events < changes and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.01)
        stop.set()
        thread.join()
        elapsed = time.perf_counter() - started
        outbox.close()
        if ingest.stats.events < changes:
            raise RuntimeError(f"ingest saw {ingest.stats.events} of {changes} changes")
        return changes / elapsed
