"""Operations for the outbox tests."""

from __future__ import annotations

from typing import Any

from task_bridge.events import SourcePosition
from task_bridge.operations import Operation, operation_id


def make_op(
    n: int, uid: str = "u1", target: str = "fragment", payload: Any = None, error: str | None = None
) -> Operation:
    """An upsert from change `n` of a Postgres transaction (its own op id per `n`)."""
    position = SourcePosition(kind="pg", lsn=1000 + n, index=0)
    return Operation(
        op_id=operation_id(position, "rule", 0),
        target=target,
        op="upsert",
        uid=uid,
        rule="rule",
        action_index=0,
        position=position,
        payload={"n": n} if payload is None else payload,
        error=error,
    )
