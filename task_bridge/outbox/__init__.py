"""Durable outbox: operations and source checkpoints, committed together.

`open_outbox(url, base_dir)` is the one way in; URLs follow SQLAlchemy's convention. The
protocol, by caller role, and the op life cycle: `base.py`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from task_bridge.errors import ConfigError
from task_bridge.outbox.base import (
    DeliveryOutbox,
    HousekeepingOutbox,
    IngestOutbox,
    OperatorOutbox,
    Outbox,
    RemoteStore,
)
from task_bridge.outbox.sqlite import SYNCHRONOUS_MODES, SqliteOutbox

__all__ = [
    "DeliveryOutbox",
    "HousekeepingOutbox",
    "IngestOutbox",
    "OperatorOutbox",
    "Outbox",
    "RemoteStore",
    "SqliteOutbox",
    "open_outbox",
    "sqlite_path",
]

_URL_HELP = (
    "expected sqlite:///relative.db, sqlite:////absolute/path.db, sqlite:///:memory:"
    " or postgresql://user:password@host:port/database[?schema=name]"
)
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str, base_dir: Path) -> tuple[str, str]:
    """(path, synchronous mode) from a sqlite URL; relative paths are relative to `base_dir`.

    The only URL option is `?synchronous=normal|full`.
    """
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"outbox.url: {_URL_HELP}, got {url.partition(':')[0]!r}")
    rest, _, query = url.removeprefix("sqlite:///").partition("?")
    synchronous = "NORMAL"
    if query:
        key, _, value = query.partition("=")
        if key != "synchronous" or value.upper() not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"outbox.url: unknown option {query!r} (the only one is synchronous=normal|full)"
            )
        synchronous = value.upper()
    if not rest:
        raise ConfigError(f"outbox.url: no database path in {url!r}; {_URL_HELP}")
    if rest == ":memory:":
        return rest, synchronous
    path = Path(rest)
    if not path.is_absolute():
        path = base_dir / path
    return str(path), synchronous


def open_outbox(
    url: str,
    base_dir: Path,
    write_lock: threading.Lock | None = None,
    takeover_hold: float = 0.0,
) -> Outbox:
    """Open (creating it and its parent directories if needed) the outbox named by `url`.
    SQLite instances in one process that share `write_lock` queue their writes on it
    (Postgres instances queue on a lock in the database). `takeover_hold`: seconds the ops a
    dead claimer had in flight wait before this bridge sends them (a shared Postgres outbox
    only: one process owns a SQLite outbox)."""
    if url.startswith(_POSTGRES_SCHEMES):
        from task_bridge.outbox.postgres import PostgresOutbox

        return PostgresOutbox(url, takeover_hold)
    path, synchronous = sqlite_path(url, base_dir)
    return SqliteOutbox(path, synchronous, write_lock)
