"""task-bridge: change events from a database to task APIs, idempotently.

    source -> ChangeEvent -> rules -> Operation -> outbox (+checkpoint) -> delivery -> target

`task_bridge.sources` read row changes (Postgres pgoutput, Kafka), `task_bridge.rules` turn
each event into task operations with deterministic ids, `task_bridge.ingest` commits them with
the source position in the outbox before acknowledging the source, `task_bridge.delivery`
sends them through `task_bridge.targets`, one at a time per task, with retries and
dead-lettering.

The public surface is `__all__` here: the event and operation types, the `Source` and
`Target` protocols (with what they exchange; targets register in `task_bridge.targets`),
and `task_bridge.testing` (the fakes of every task API as real HTTP servers, a throwaway
Postgres cluster, a Kafka-protocol broker).
"""

from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from task_bridge.operations import Operation, operation_id
from task_bridge.sources.base import Commit, Idle, Poison, Source, SourceItem
from task_bridge.targets.base import Call, Delivered, Target, TargetDeps

__version__ = "0.1.0"

__all__ = [
    "UNCHANGED",
    "Call",
    "ChangeEvent",
    "Commit",
    "Delivered",
    "Idle",
    "Operation",
    "Poison",
    "Source",
    "SourceItem",
    "SourcePosition",
    "Target",
    "TargetDeps",
    "__version__",
    "operation_id",
]
