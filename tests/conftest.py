"""Session fixtures: one throwaway Postgres cluster, a fresh database per test, and a
Kafka-protocol broker (Tansu, or testcontainers' Kafka where Docker answers).

Real services are required in CI: with CI=true a missing Postgres or broker fails the run
instead of skipping (STYLE habit 11).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from task_bridge.testing.kafka import BrokerUnavailable, KafkaBroker
from task_bridge.testing.postgres import ClusterError, TempCluster, find_bindir

# CI runs the property tests on a fixed sequence of examples (a red CI must be reproducible);
# elsewhere each run draws new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempCluster]:
    try:
        find_bindir()
    except ClusterError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres is required in CI: {exc}")
        pytest.skip(str(exc))
    with TempCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: TempCluster) -> Iterator[str]:
    """DSN of a new database (dropped afterwards with its replication slots)."""
    if not pg_cluster.running:  # an earlier test stopped or killed it
        pg_cluster.start()
    name = f"t{os.getpid()}_{next(_db_counter)}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    if pg_cluster.running:  # a test may leave the server stopped; nothing to drop then
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker()
    try:
        broker.start()
    except BrokerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a Kafka broker is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.stop()
