"""ChangeEvent helpers: positions, `row`, `changed`, the UNCHANGED sentinel."""

from __future__ import annotations

import copy
import pickle

from task_bridge.events import UNCHANGED, ChangeEvent, SourcePosition, format_lsn, parse_lsn
from task_bridge.operations import operation_id


def test_lsn_text_round_trip() -> None:
    """LSNs print as Postgres does and parse back."""
    assert format_lsn(0x1_0000_00A0) == "1/A0"
    assert parse_lsn("16/B374D848") == 0x16_B374D848


def test_position_key_distinguishes_changes_in_one_transaction() -> None:
    """Two changes sharing a commit LSN get different keys and so different op ids."""
    a = SourcePosition(kind="postgres", lsn=100, index=0)
    b = SourcePosition(kind="postgres", lsn=100, index=1)
    assert a.key() != b.key()
    assert operation_id(a, "r", 0) != operation_id(b, "r", 0)
    assert operation_id(a, "r", 0) == operation_id(SourcePosition("postgres", 100, 0), "r", 0)
    assert operation_id(a, "r", 0) != operation_id(a, "r", 1)


def test_changed_and_row() -> None:
    """`changed` lists differing columns, skips UNCHANGED; `row` is before for deletes."""
    pos = SourcePosition(kind="postgres", lsn=1)
    ev = ChangeEvent(
        "update",
        "public",
        "t",
        pos,
        after={"id": 1, "a": 2, "b": UNCHANGED},
        before={"id": 1, "a": 1, "b": "x"},
    )
    assert ev.changed == ["a"]
    assert ChangeEvent("update", "public", "t", pos, after={"id": 1}, before=None).changed == []
    deleted = ChangeEvent("delete", "public", "t", pos, before={"id": 9})
    assert deleted.row == {"id": 9}


def test_unchanged_is_a_singleton_that_survives_copy_and_pickle() -> None:
    """UNCHANGED stays identical through copy/pickle and is falsy."""
    assert copy.deepcopy(UNCHANGED) is UNCHANGED
    assert pickle.loads(pickle.dumps(UNCHANGED)) is UNCHANGED
    assert not UNCHANGED and repr(UNCHANGED) == "UNCHANGED"
