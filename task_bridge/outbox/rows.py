"""Rows in and out of the SQL outboxes: ops as insert values, stored rows as `StoredOp`,
payloads and responses as JSON.

A deferred chain step (`Operation.deferred`) is kept in the payload column as
`{"$deferred": {...}}`; only this module knows that: ops and stored ops carry it as a typed
field with an empty payload.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from task_bridge.jsonenc import PayloadError, dumps_payload, loads_payload
from task_bridge.operations import DeferredStep, Operation
from task_bridge.outbox.base import StoredOp

RESPONSE_MAX_CHARS = 65536
DEFERRED_COLUMN_KEY = "$deferred"


def stored_payload(op: Operation) -> Any:
    """What the payload column holds for `op`."""
    if op.deferred is not None:
        return {DEFERRED_COLUMN_KEY: op.deferred.to_json()}
    return op.payload


def row_to_op(row: Sequence[Any]) -> StoredOp:
    payload = loads_payload(row[8])
    deferred = None
    if isinstance(payload, dict) and DEFERRED_COLUMN_KEY in payload:
        deferred, payload = DeferredStep.from_json(payload[DEFERRED_COLUMN_KEY]), {}
    return StoredOp(
        seq=row[0],
        op_id=row[1],
        target=row[2],
        uid=row[3],
        op=row[4],
        rule=row[5],
        action_index=row[6],
        position=row[7],
        payload=payload,
        status=row[9],
        attempts=row[10],
        next_attempt_at=row[11],
        created_at=row[12],
        updated_at=row[13],
        last_error=row[14],
        http_status=row[15],
        chain=row[16],
        step_id=row[17],
        deferred=deferred,
    )


ROW_FIELDS = (
    "op_id",
    "target",
    "uid",
    "op",
    "rule",
    "action_index",
    "position",
    "payload",
    "now",
    "error",
    "chain",
    "step_id",
    "on_error",
)
"""The names of `op_row`'s values, in its order (the backends' INSERT statements follow it)."""


def op_row(op: Operation, now: float, payload: Any, error: str | None) -> list[Any]:
    """One op's insert values, in `ROW_FIELDS` order."""
    return [
        op.op_id,
        op.target,
        op.uid,
        op.op,
        op.rule,
        op.action_index,
        op.position.key(),
        payload,
        now,
        error,
        op.chain,
        op.step_id,
        op.on_error if op.chain is not None else None,
    ]


def _unencodable(op: Operation, exc: PayloadError) -> tuple[dict[str, str], str]:
    """An unencodable payload makes the op dead, not the batch; it is kept as a note for
    inspection (a redrive sends that, and the API refuses it)."""
    reason = f"rule '{op.rule}' action {op.action_index}: payload: {exc}"
    return {"_unencodable": repr(op.payload)}, op.error or reason


def checked_payload(op: Operation) -> tuple[Any, str | None]:
    """(payload, error) as stored, the payload still as an object."""
    payload = stored_payload(op)
    try:
        dumps_payload(payload)
    except PayloadError as exc:
        return _unencodable(op, exc)
    return payload, op.error


def encode_op(op: Operation, now: float) -> tuple[Any, ...]:
    """Insert parameters for one op, the payload as JSON text (encoded once)."""
    try:
        return tuple(op_row(op, now, dumps_payload(stored_payload(op)), op.error))
    except PayloadError as exc:
        note, error = _unencodable(op, exc)
        return tuple(op_row(op, now, dumps_payload(note), error))


def encode_response(value: Any) -> str | None:
    """A step's response as stored (JSON, bounded); too big -> a note instead of the body."""
    if value is None:
        return None
    try:
        text = dumps_payload(value)
    except PayloadError:
        text = json.dumps(repr(value))
    if len(text) > RESPONSE_MAX_CHARS:
        return json.dumps({"_truncated": f"response of {len(text)} characters not kept"})
    return text
