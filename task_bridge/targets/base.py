"""The target seam: what a task API target is given, and what it answers.

A target family is one module with a config model and a target class, registered with one
line in `task_bridge.targets` (`register(MyConfig, MyTarget)`); see CONTRIBUTING.md.

- The **config model** (a `targets.http.TargetConfigBase`) is validated with the rest of
  `bridge.yaml`; its `kind: Literal["..."]` names the family. It also answers what `validate`
  asks of an action (`supported_ops`, `check_action`, `unsupported_note`), with no network and
  no event loop.
- The **target** is built by its factory, `factory(name, config, deps)`, and receives one `Call`
  per attempt: never an outbox row.

Target members. Required: `name`, `kind`, `send`. With safe defaults in `TargetBase` (and
`targets.http.HttpTarget`, which most targets extend): `batch_ops` (empty: no batching),
`max_batch` (1), `send_batch` (never called without `batch_ops`), `aclose` (nothing to close).
Targets raise only `task_bridge.errors` delivery errors: `PermanentDeliveryError`,
`TransientDeliveryError`, `RetryAfter` (see `targets.http.classify`).

Batching: a target with `max_batch > 1` gets up to `max_batch` due calls whose `op` is in
`batch_ops` in one `send_batch`. Those belong to different tasks (only the head op of a task is
ever due), so per-task order holds. `send_batch` answers per call, in order: `Delivered` or the
`DeliveryError` for that item; it raises only when the whole request failed (the same error then
applies to every call; a `PermanentDeliveryError` makes delivery send them one at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from task_bridge.errors import DeliveryError, PermanentDeliveryError
from task_bridge.templating import Templates


@dataclass(frozen=True, slots=True)
class Call:
    """One attempt at one operation, as a target sees it."""

    op_id: str
    """Deterministic id of the operation (the same on every attempt): an idempotency key."""
    target: str
    op: str
    uid: str
    """The rendered task UID (the task's identity at the API)."""
    payload: Mapping[str, Any]
    """The rendered `task` of the action."""
    attempt: int
    """1 on the first attempt."""


@dataclass(frozen=True, slots=True)
class Delivered:
    http_status: int
    remote_id: str | None = None
    response: Any = None


class Target(Protocol):
    name: str
    kind: str
    batch_ops: frozenset[str]
    max_batch: int

    async def send(self, call: Call) -> Delivered: ...

    async def send_batch(self, calls: Sequence[Call]) -> list[Delivered | DeliveryError]: ...

    async def aclose(self) -> None: ...


class TargetStore(Protocol):
    """What targets may keep in the outbox database: remote ids and small state (cursors,
    started automation executions). Writes commit at once. Awaited: the bridge serves it
    from the outbox's own thread (`outbox.offloop.LoopOutbox`), never on the event loop."""

    async def get_remote_id(self, target: str, uid: str) -> str | None: ...

    async def set_remote_id(self, target: str, uid: str, remote_id: str) -> None: ...

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class TargetDeps:
    """What the composition root hands every target factory."""

    client: httpx.AsyncClient
    """The bridge's one HTTP client (connection pool, timeouts)."""
    store: TargetStore
    logger: logging.Logger
    templates: Templates
    """The bridge's one sandboxed template environment (for targets with templates)."""

    @classmethod
    def of(
        cls,
        client: httpx.AsyncClient,
        store: TargetStore | None = None,
        logger: logging.Logger | None = None,
        templates: Templates | None = None,
    ) -> TargetDeps:
        """Deps for a target used on its own (tests, tools): an in-memory store, the
        `task_bridge` logger and a default template environment unless given."""
        return cls(
            client,
            store if store is not None else MemoryStore(),
            logger or logging.getLogger("task_bridge"),
            templates or Templates(),
        )


TargetFactory = Callable[[str, Any, TargetDeps], Target]


class TargetBase:
    """Safe defaults for the optional target members."""

    kind: str = ""
    batch_ops: frozenset[str] = frozenset()
    max_batch: int = 1

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, call: Call) -> Delivered:
        raise NotImplementedError

    async def send_batch(self, calls: Sequence[Call]) -> list[Delivered | DeliveryError]:
        raise PermanentDeliveryError(f"target '{self.name}' does not take batches")

    async def aclose(self) -> None:
        return None


def batch_size_of(target: Target, op: str) -> int:
    """How many calls like `op` the target takes in one request (1: no batching)."""
    return max(1, target.max_batch) if op in target.batch_ops else 1


class MemoryStore:
    """A `TargetStore` in a dict: for commands that build targets but never deliver."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._state: dict[str, str] = {}

    async def get_remote_id(self, target: str, uid: str) -> str | None:
        return self._ids.get((target, uid))

    async def set_remote_id(self, target: str, uid: str, remote_id: str) -> None:
        self._ids[(target, uid)] = remote_id

    async def get_state(self, key: str) -> str | None:
        return self._state.get(key)

    async def set_state(self, key: str, value: str) -> None:
        self._state[key] = value
