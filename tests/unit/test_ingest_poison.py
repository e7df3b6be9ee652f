"""Ingest on a real rule engine and a real SQLite outbox: an event the rules raise on outside
what the engine dead-letters per action (here: building `changed` compares two values whose
comparison raises) costs that event only (issue #14 item 8)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from task_bridge.events import ChangeEvent, SourcePosition
from task_bridge.ingest import Ingest
from task_bridge.observability import Metrics
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.rules import RuleEngine
from task_bridge.sources.base import Commit, SourceItem
from tests.support.wait import wait_until
from tests.unit.test_rules_loader import _load_dir

RULES = """
rules:
  - name: moved
    table: public.t
    on: [update]
    when: "'n' in changed"
    actions:
      - {op: upsert, target: fragment, uid: "t-{{ after.id }}"}
"""


class Incomparable:
    """A value whose comparison raises (as a third-party type's might)."""

    def __eq__(self, other: object) -> bool:
        raise TypeError("these values cannot be compared")

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return "incomparable"


class ScriptedSource:
    """A source that hands out a fixed list of items once."""

    name = "scripted"

    def __init__(self, items: list[SourceItem]) -> None:
        self.items = items
        self.acked: list[str] = []

    def open(self, checkpoint: str | None) -> None:
        pass

    def read(self, max_items: int, timeout: float) -> list[SourceItem]:
        out, self.items = self.items[:max_items], self.items[max_items:]
        return out

    def ack(self, position: str) -> None:
        self.acked.append(position)

    def close(self) -> None:
        pass


def _update(index: int, before: Any, after: Any) -> ChangeEvent:
    return ChangeEvent(
        op="update",
        schema="public",
        table="t",
        position=SourcePosition(kind="postgres", lsn=0x10, index=index),
        before={"id": index, "n": before},
        after={"id": index, "n": after},
        key={"id": index},
    )


def test_an_event_the_rules_raise_on_is_dead_and_the_others_go_on(tmp_path: Path) -> None:
    """Events 0 and 2 give their ops, event 1 one dead entry naming the exception, with the
    event's values as text; the commit after them is stored and acknowledged."""
    source = ScriptedSource(
        [
            _update(0, 1, 2),
            _update(1, Incomparable(), Incomparable()),
            _update(2, 1, 3),
            Commit("0/20"),
        ]
    )
    outbox = SqliteOutbox(str(tmp_path / "outbox.db"))
    engine = RuleEngine(_load_dir(tmp_path, {"r.yaml": RULES}))
    ingest = Ingest(source, engine, outbox, logger=logging.getLogger("test"), metrics=Metrics())
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            ingest.run(stop)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: failure or "0/20" in source.acked, timeout=30, message="acked")
    finally:
        stop.set()
        thread.join(30)
    assert not failure, f"ingest stopped: {failure[0]!r}"
    ops = {op.uid: op for op in outbox.list()}
    assert set(ops) == {"t-0", "t-2", "public.t[id=1]"}
    dead = ops["public.t[id=1]"]
    assert dead.status == "dead" and dead.op == "poison"
    assert dead.last_error == (
        "poison message: the rules raised on this update of public.t:"
        " TypeError: these values cannot be compared"
    )
    assert dead.payload["after"] == {"id": "1", "n": "incomparable"}
    assert outbox.get_checkpoint("scripted") == "0/20"
    outbox.close()
