"""What rules hand to the outbox: one task operation, with a deterministic id (G2)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from bridge.events import SourcePosition


def operation_id(position: SourcePosition, rule: str, action_index: int) -> str:
    """Hash of (event position, rule name, action index): re-reading an event gives the same id."""
    raw = f"{position.key()}|{rule}|{action_index}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Operation:
    """One call to make against one task in one target.

    `error` set means the rule failed for this event (template error...): the outbox stores
    the operation directly as `dead` with that reason. `chain` groups the ops of one rule for
    one event when they must run one after another (see `bridge.outbox.base`).
    """

    op_id: str
    target: str
    op: str
    uid: str
    rule: str
    action_index: int
    position: SourcePosition
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    chain: str | None = None
    step_id: str | None = None
    on_error: str = "retry"


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a finished chain step tells the steps after it (`steps.<id>.*` in templates)."""

    ok: bool
    status: int | None
    response: Any
