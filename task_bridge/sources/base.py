"""The source protocol: a pull stream of change events and durable-position markers.

`read()` returns items in source order:

- `ChangeEvent`: one row change.
- `Commit(position)`: everything before this item belongs to a finished unit (a Postgres
  transaction, a Kafka poll batch); `position` is the checkpoint to store once the operations
  of all earlier events are durable in the outbox.
- `Poison(position, reason, raw)`: a record that cannot become an event (undecodable, or a
  value no loader takes); stored as a dead entry, and reading goes on.
- `Idle(position)`: the source has nothing in flight; once earlier work is durable, `position`
  may be acknowledged too (G9: confirms keepalive positions so a quiet slot holds no WAL).

A position is text; an `events.Checkpoint` (a str) also decides how it merges into the stored one.
The caller stores the checkpoint with the operations in one outbox transaction, then calls
`ack(position)`. Required: all members. A source raises `SourceUnavailable` when the connection
drops; the caller closes it and opens it again from the stored checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from task_bridge.events import ChangeEvent, SourcePosition


@dataclass(frozen=True, slots=True)
class Lag:
    """A source's lag, as upkeep logs it (`event` with `context`, `lag_bytes`,
    `threshold_bytes`; a warning past `warn_bytes`)."""

    event: str
    context: dict[str, str]
    bytes: int
    warn_bytes: int


@dataclass(frozen=True, slots=True)
class Commit:
    position: str
    """A plain str, or a `Checkpoint` that merges itself into the stored one."""


@dataclass(frozen=True, slots=True)
class Idle:
    position: str | None


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the source cannot decode: it becomes one dead outbox entry, and reading
    goes on. `raw` is kept (bounded) for the operator."""

    position: SourcePosition
    reason: str
    raw: dict[str, Any]
    table: str | None = None
    """`schema.table` of the change, when the source knows it (Postgres)."""
    key: dict[str, Any] | None = None
    """The row's key as far as it could be read (text values), when known."""


SourceItem = ChangeEvent | Commit | Idle | Poison


class Source(Protocol):
    name: str
    """Checkpoint key in the outbox, e.g. `postgres:task_bridge`."""

    def open(self, checkpoint: str | None) -> None:
        """Connect (creating slot/publication etc. when missing) and start from `checkpoint`."""
        ...

    def read(self, max_items: int, timeout: float) -> list[SourceItem]:
        """Up to `max_items` items; waits at most `timeout` seconds when none are ready."""
        ...

    def ack(self, position: str) -> None:
        """Everything up to `position` is durable downstream."""
        ...

    def lag(self) -> Lag | None:
        """How far the source's server is ahead of what was acknowledged, or None when it
        cannot say. Called from another thread than `read` (upkeep, every 30 s): it must
        not touch the reading connection."""
        ...

    def close(self) -> None: ...
