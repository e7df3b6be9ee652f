"""The target protocol: apply one stored operation to one task API.

Required: `name`, `kind`, `supported_ops`, `send`. Safe defaults: `check_action` (no extra
checks), `aclose` (nothing to close). Targets raise only `task_bridge.errors` delivery errors:
`PermanentDeliveryError`, `TransientDeliveryError`, `RetryAfter`.

Optional batching (`BatchingTarget`): a target with `max_batch > 1` gets up to `max_batch` due ops
whose `op` is in `batch_ops` in one `send_batch` call (one request, one rate-limit token). Those
ops belong to different tasks (only the head op of a task is ever due), so per-task order holds.
`send_batch` answers per op, in order: `Delivered` or the `DeliveryError` for that item; it raises
only when the whole request failed (the same error then applies to every op).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from task_bridge.errors import DeliveryError
from task_bridge.outbox.base import StoredOp


@dataclass(frozen=True, slots=True)
class Delivered:
    http_status: int
    remote_id: str | None = None
    response: Any = None


class Target(Protocol):
    name: str
    kind: str
    supported_ops: frozenset[str]

    async def send(self, op: StoredOp) -> Delivered: ...

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        """Problems with an action of this target (validate time). Empty = fine."""
        ...

    async def aclose(self) -> None: ...


class BatchingTarget(Target, Protocol):
    batch_ops: frozenset[str]
    max_batch: int

    async def send_batch(self, ops: Sequence[StoredOp]) -> list[Delivered | DeliveryError]: ...


def batch_size_of(target: Target, op: str) -> int:
    """How many ops like `op` the target takes in one request (1: no batching)."""
    if op in getattr(target, "batch_ops", ()):
        return max(1, int(getattr(target, "max_batch", 1)))
    return 1


class TargetStore(Protocol):
    """What targets may keep in the outbox database: remote ids and small state (cursors,
    started automation executions). Writes commit at once; calls come from the delivery loop."""

    def get_remote_id(self, target: str, uid: str) -> str | None: ...

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None: ...

    def get_state(self, key: str) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


class MemoryStore:
    """A `TargetStore` in a dict: for commands that build targets but never deliver."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._state: dict[str, str] = {}

    def get_remote_id(self, target: str, uid: str) -> str | None:
        return self._ids.get((target, uid))

    def set_remote_id(self, target: str, uid: str, remote_id: str) -> None:
        self._ids[(target, uid)] = remote_id

    def get_state(self, key: str) -> str | None:
        return self._state.get(key)

    def set_state(self, key: str, value: str) -> None:
        self._state[key] = value
