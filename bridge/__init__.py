"""task-bridge: change events from a database to task APIs, idempotently.

    source -> ChangeEvent -> rules -> Operation -> outbox (+checkpoint) -> delivery -> target

`bridge.sources` read row changes (Postgres pgoutput), `bridge.rules` turn each event into
task operations with deterministic ids, `bridge.ingest` commits them with the source position
in the outbox before acknowledging the source, `bridge.delivery` sends them through
`bridge.targets`, one at a time per task, with retries and dead-lettering.
"""

from bridge.events import UNCHANGED, ChangeEvent, SourcePosition
from bridge.operations import Operation, operation_id

__all__ = ["UNCHANGED", "ChangeEvent", "Operation", "SourcePosition", "operation_id"]
