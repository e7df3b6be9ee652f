"""For tests and rule development: fakes of every supported task API (real HTTP servers on
loopback, with fault injection and a request ledger), a throwaway Postgres cluster with
`wal_level=logical`, and a Kafka-protocol broker. Importing this package starts nothing."""

from task_bridge.fakes.base import FakeApi
from task_bridge.fakes.copilotz import FakeCopilotz
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.fakes.generic import FakeGeneric
from task_bridge.fakes.humanlambdas import FakeHumanLambdas
from task_bridge.fakes.workflow import FakeWorkflow
from task_bridge.testing.kafka import BrokerUnavailable, KafkaBroker
from task_bridge.testing.postgres import ClusterError, TempCluster

__all__ = [
    "BrokerUnavailable",
    "ClusterError",
    "FakeApi",
    "FakeCopilotz",
    "FakeFragment",
    "FakeGeneric",
    "FakeHumanLambdas",
    "FakeWorkflow",
    "KafkaBroker",
    "TempCluster",
]
