"""The target protocol: apply one stored operation to one task API.

Required: `name`, `kind`, `supported_ops`, `send`. Safe defaults: `check_action` (no extra
checks), `aclose` (nothing to close). Targets raise only `bridge.errors` delivery errors:
`PermanentDeliveryError`, `TransientDeliveryError`, `RetryAfter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bridge.outbox.base import StoredOp


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
