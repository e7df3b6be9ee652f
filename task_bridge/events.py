"""What a source hands to the rules: one row change, typed, with its position."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

Op = Literal["insert", "update", "delete", "snapshot", "truncate", "completed"]
OPS: Final[tuple[Op, ...]] = ("insert", "update", "delete", "snapshot", "truncate", "completed")
SourceKind = Literal["postgres", "kafka", "task_api", "dry-run"]
"""What read an event: Postgres logical replication, a Kafka topic, a task API's feed (e.g.
completed Human Lambdas tasks), or `dry-run`'s event from the command line."""


class _Unchanged:
    """Sentinel for an unchanged TOASTed value the source did not send."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __str__(self) -> str:
        return "UNCHANGED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


def format_lsn(lsn: int) -> str:
    """`0x16B3748` -> `'0/16B3748'` (Postgres' text form)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """`'0/16B3748'` -> int."""
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class Checkpoint(str):
    """A source position that owns how it combines with the stored one.

    The outbox's `put(ops, source, checkpoint, now)` stores a plain `str` as it is (it replaces
    the stored position). A source whose position has parts that several writers share passes
    a subclass whose `merge` folds what it holds into the stored text: Kafka partition offsets,
    which bridges sharing one outbox split among them (`kafka.PartitionOffsets`). It is a
    `str`, so ingest, the writer, `Source.ack` and logs handle it as the position text; the
    outbox calls `merge` inside the write transaction and never reads the text itself.
    """

    __slots__ = ()

    def merge(self, stored: str | None) -> str:
        """The text to store given the stored one (None: nothing stored yet). Replaces."""
        return str(self)


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where an event came from. `key()` is stable and unique per event (G2).

    Postgres: `lsn` is the transaction's commit LSN, `index` the change's index in it.
    Kafka: `topic`/`partition`/`offset`. Task APIs: `topic` names the feed, `offset` the item.
    """

    kind: SourceKind
    lsn: int | None = None
    index: int = 0
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    _key: str = field(default="", init=False, repr=False, compare=False)

    def key(self) -> str:
        """Computed once (it names every operation of the event)."""
        if not self._key:
            if self.lsn is not None:
                key = f"pg:{format_lsn(self.lsn)}:{self.index}"
            else:
                key = f"{self.kind}:{self.topic}:{self.partition}:{self.offset}"
            object.__setattr__(self, "_key", key)
        return self._key


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change as rules see it (SPEC section 3)."""

    op: Op
    schema: str
    table: str
    position: SourcePosition
    after: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    key: dict[str, Any] = field(default_factory=dict)
    commit_time: datetime | None = None
    txid: int | None = None

    @property
    def row(self) -> dict[str, Any] | None:
        return self.before if self.op == "delete" else self.after

    @property
    def changed(self) -> list[str]:
        """Columns whose value differs between a full `before` and `after`."""
        if not self.before or not self.after:
            return []
        if any(v is UNCHANGED for v in self.before.values()):
            return []
        if set(self.before) != set(self.after):
            return []
        return [
            name
            for name, value in self.after.items()
            if value is not UNCHANGED and self.before.get(name) != value
        ]

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    def source_info(self) -> dict[str, Any]:
        pos = self.position
        info: dict[str, Any] = {
            "kind": pos.kind,
            "commit_time": self.commit_time,
            "txid": self.txid,
        }
        if pos.lsn is not None:
            info["lsn"] = format_lsn(pos.lsn)
        else:
            info.update(topic=pos.topic, partition=pos.partition, offset=pos.offset)
        return info

    def template_context(self, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The names a rule's `when` and templates can use; `changed` and `source` (the
        costly ones) are left out when named in `skip` (no template reads them)."""
        names: dict[str, Any] = {
            "op": self.op,
            "schema": self.schema,
            "table": self.table,
            "after": self.after,
            "before": self.before,
            "row": self.row,
            "key": self.key,
        }
        if "changed" not in skip:
            names["changed"] = self.changed
        if "source" not in skip:
            names["source"] = self.source_info()
        return names
