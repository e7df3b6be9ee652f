"""Outbox semantics, the same on SQLite (in memory) and on Postgres (a fresh schema per test):
put, claim, complete, operator commands."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from task_bridge.errors import OutboxError
from task_bridge.events import UNCHANGED, Checkpoint
from task_bridge.operations import DeferredStep, Operation
from task_bridge.outbox.base import OpResult, StoredOp
from task_bridge.outbox.postgres import PostgresOutbox
from task_bridge.outbox.shared import SqlOutbox
from task_bridge.outbox.sqlite import SqliteOutbox, dumps_payload
from task_bridge.sources.kafka import PartitionOffsets
from task_bridge.testing.postgres import TempCluster
from tests.support.ops import make_op

SOURCE = "postgres:slot"


_schemas = itertools.count()


@pytest.fixture(scope="module")
def outbox_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database for the Postgres outboxes of this module (each test gets its own schema)."""
    cluster: TempCluster = request.getfixturevalue("pg_cluster")
    name = f"outbox_{os.getpid()}"
    yield cluster.create_database(name)
    cluster.drop_database(name)


@pytest.fixture
def open_box(request: pytest.FixtureRequest) -> Iterator[Callable[[], SqlOutbox]]:
    """Opens the outbox under test again (as a process restarting after a crash would): the
    same SQLite instance (its memory is its file), a new connection to the same Postgres schema."""
    opened: list[SqlOutbox] = []
    if request.param == "sqlite":
        box = SqliteOutbox(":memory:")
        opened.append(box)

        def reopen() -> SqlOutbox:
            return box
    else:
        url = f"{request.getfixturevalue('outbox_db')}?schema=t{next(_schemas)}"

        def reopen() -> SqlOutbox:
            opened.append(PostgresOutbox(url))
            return opened[-1]

    yield reopen
    for box in opened:
        box.close()


@pytest.fixture
def outbox(open_box: Callable[[], SqlOutbox]) -> SqlOutbox:
    return open_box()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "open_box" in metafunc.fixturenames:
        metafunc.parametrize("open_box", ["sqlite", "postgres"], indirect=True)


def ns(ops: list[StoredOp]) -> list[int]:
    return [op.payload["n"] for op in ops]


def status_of(outbox: SqlOutbox, op: Operation) -> str:
    stored = outbox.get(op.op_id)
    assert stored is not None
    return stored.status


def deliver(outbox: SqlOutbox, ops: list[StoredOp], now: float = 2.0) -> None:
    outbox.complete([OpResult(seq=o.seq, outcome="delivered", attempts=1, now=now) for o in ops])


def kill(outbox: SqlOutbox, op: StoredOp, now: float = 2.0) -> None:
    outbox.complete([OpResult(seq=op.seq, outcome="dead", attempts=1, now=now, error="400 bad")])


# -- put ---------------------------------------------------------------------------------------


def test_put_is_idempotent_and_moves_the_checkpoint(outbox: SqlOutbox) -> None:
    """Putting the same ops twice inserts them once, while the checkpoint follows each put."""
    ops = [make_op(i, uid=f"u{i}") for i in range(5)]
    assert outbox.put(ops, SOURCE, "0/10", now=1.0) == 5
    assert outbox.put(ops, SOURCE, "0/20", now=2.0) == 0
    assert outbox.counts()["pending"] == 5
    assert outbox.get_checkpoint(SOURCE) == "0/20"
    assert outbox.get_checkpoint("other") is None


def test_put_without_checkpoint_keeps_the_stored_one(outbox: SqlOutbox) -> None:
    """A put with checkpoint=None stores the ops and leaves the source's checkpoint alone."""
    outbox.put([], SOURCE, "0/10", now=1.0)
    outbox.put([make_op(1)], SOURCE, None, now=2.0)
    assert outbox.get_checkpoint(SOURCE) == "0/10"
    assert outbox.counts()["pending"] == 1


def test_partition_checkpoints_of_two_writers_merge(open_box: Callable[[], SqlOutbox]) -> None:
    """Kafka's checkpoint holds the partitions its consumer holds; stored, it merges into the
    stored map, so two writers sharing the outbox keep each other's partitions."""
    one, two = open_box(), open_box()
    one.put([], "kafka:g", PartitionOffsets('{"t:0": 10, "t:1": 20}'), now=1.0)
    two.put([], "kafka:g", PartitionOffsets('{"t:2": 5}'), now=1.0)
    one.put([make_op(1)], "kafka:g", PartitionOffsets('{"t:0": 11}'), now=2.0)
    assert json.loads(one.get_checkpoint("kafka:g") or "") == {"t:0": 11, "t:1": 20, "t:2": 5}


def test_a_plain_checkpoint_replaces_whatever_its_text(outbox: SqlOutbox) -> None:
    """A plain str is stored as it is, even when it reads as a JSON object: merging is the
    source's decision (a `Checkpoint`), never the outbox's reading of the text."""
    outbox.put([], SOURCE, '{"a": 1, "b": 2}', now=1.0)
    outbox.put([], SOURCE, '{"a": 3}', now=2.0)
    assert outbox.get_checkpoint(SOURCE) == '{"a": 3}'


class _Highest(Checkpoint):
    """A made-up merging checkpoint: the higher of the stored and the new number."""

    __slots__ = ()

    def merge(self, stored: str | None) -> str:
        if stored == "refuse":
            raise ValueError("cannot merge into 'refuse'")
        return str(max(int(self), int(stored or 0)))


def test_a_checkpoint_merges_inside_the_write_transaction(outbox: SqlOutbox) -> None:
    """The outbox hands `merge` the stored text and stores its answer, in the transaction of
    the ops: a merge that fails stores neither the ops nor a checkpoint."""
    outbox.put([], SOURCE, _Highest("7"), now=1.0)
    outbox.put([], SOURCE, _Highest("5"), now=2.0)
    assert outbox.get_checkpoint(SOURCE) == "7"
    outbox.put([], SOURCE, "refuse", now=3.0)
    with pytest.raises(ValueError, match="refuse"):
        outbox.put([make_op(1)], SOURCE, _Highest("9"), now=4.0)
    assert outbox.get(make_op(1).op_id) is None
    assert outbox.get_checkpoint(SOURCE) == "refuse"


def test_stored_op_round_trips_every_field(outbox: SqlOutbox) -> None:
    """get() returns what put() stored: identity, position key, payload and timestamps."""
    op = make_op(7, uid="task-7", payload={"title": "x", "n": 7})
    outbox.put([op], SOURCE, None, now=5.0)
    stored = outbox.get(op.op_id)
    assert stored is not None
    assert (stored.target, stored.uid, stored.op, stored.rule, stored.action_index) == (
        "fragment",
        "task-7",
        "upsert",
        "rule",
        0,
    )
    assert stored.position == op.position.key()
    assert stored.payload == {"title": "x", "n": 7}
    assert (stored.status, stored.attempts, stored.last_error, stored.http_status) == (
        "pending",
        0,
        None,
        None,
    )
    assert stored.created_at == stored.updated_at == stored.next_attempt_at == 5.0
    assert outbox.get("missing") is None


def test_a_deferred_chain_step_round_trips_as_a_typed_field(outbox: SqlOutbox) -> None:
    """A step rendered at send time comes back with its `deferred` step (event, templates,
    earlier step ids) and an empty payload: no marker key reaches delivery or targets."""
    step = DeferredStep(
        {"op": "insert", "after": {"id": 1}}, "steps.a.ok", {"x": "{{ 1 }}"}, ("a",)
    )
    op = dataclasses.replace(make_op(8), payload={}, deferred=step, chain="c", step_id="b")
    outbox.put([op], SOURCE, None, now=5.0)
    stored = outbox.get(op.op_id)
    assert stored is not None
    assert (stored.payload, stored.deferred) == ({}, step)
    assert outbox.get(make_op(9).op_id) is None
    outbox.put([make_op(9)], SOURCE, None, now=5.0)
    plain = outbox.get(make_op(9).op_id)
    assert plain is not None and plain.deferred is None


def test_payload_encoding_is_exact() -> None:
    """Decimals keep their exact digits, dates become ISO strings, UUIDs and sets become JSON."""
    value = {
        "amount": Decimal("12.50"),
        "at": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        "day": date(2024, 5, 1),
        "id": UUID("12345678-1234-5678-1234-567812345678"),
        "tags": ("a", "b"),
        "one": {1},
    }
    assert json.loads(dumps_payload(value)) == {
        "amount": "12.50",
        "at": "2024-05-01T12:30:00+00:00",
        "day": "2024-05-01",
        "id": "12345678-1234-5678-1234-567812345678",
        "tags": ["a", "b"],
        "one": [1],
    }


def test_unencodable_payload_dead_letters_only_that_op(outbox: SqlOutbox) -> None:
    """An op whose payload holds UNCHANGED or a value with no JSON form is stored dead with a
    reason; the rest lands."""
    bad = make_op(1, uid="a", payload={"body": UNCHANGED})
    raw = make_op(2, uid="b", payload={"blob": complex(1, 2)})
    good = make_op(3, uid="c")
    assert outbox.put([bad, raw, good], SOURCE, "0/30", now=1.0) == 3
    for op in (bad, raw):
        stored = outbox.get(op.op_id)
        assert stored is not None and stored.status == "dead"
        assert stored.last_error is not None and "payload" in stored.last_error
    assert status_of(outbox, good) == "pending"
    assert outbox.get_checkpoint(SOURCE) == "0/30"


def test_op_with_rule_error_is_stored_dead(outbox: SqlOutbox) -> None:
    """An op carrying a rule error goes in dead with that error as its reason."""
    op = make_op(1, error="template: 'row' has no attribute 'missing'")
    outbox.put([op], SOURCE, None, now=1.0)
    stored = outbox.get(op.op_id)
    assert stored is not None
    assert stored.status == "dead"
    assert stored.last_error == "template: 'row' has no attribute 'missing'"


def test_a_batch_is_stored_as_if_row_by_row(outbox: SqlOutbox) -> None:
    """Within one put: an op repeated is stored once, a task's first new op is its head only
    when nothing of it is open, and non-ASCII text and exact floats survive the trip."""
    outbox.put([make_op(1, uid="a")], SOURCE, None, now=1.0)
    text = {"n": 3, "title": 'Überweisung — 東京 "quoted" \\ \n', "ratio": 0.1 + 0.2}
    batch = [
        make_op(2, uid="a"),
        make_op(3, uid="b", payload=text),
        make_op(3, uid="b", payload=text),
        make_op(4, uid="b"),
        make_op(1, uid="a"),
    ]
    assert outbox.put(batch, SOURCE, None, now=1.5) == 3
    assert ns(outbox.claim_due(now=2.0, limit=10)) == [1, 3]
    stored = outbox.get(batch[1].op_id)
    assert stored is not None and stored.payload == text and stored.created_at == 1.5


# -- parking -----------------------------------------------------------------------------------


def test_dead_op_in_a_batch_parks_later_ops_of_its_uid_only(outbox: SqlOutbox) -> None:
    """Ops after a dead op of the same (target, uid) come in parked; other UIDs stay pending."""
    ops = [
        make_op(1, uid="a"),
        make_op(2, uid="a", error="boom"),
        make_op(3, uid="a"),
        make_op(4, uid="b"),
        make_op(5, uid="a", target="other"),
    ]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert [status_of(outbox, op) for op in ops] == [
        "pending",
        "dead",
        "parked",
        "pending",
        "pending",
    ]


def test_new_ops_of_a_blocked_uid_come_in_parked(outbox: SqlOutbox) -> None:
    """Once a UID has a dead op, ops put later for it are parked, in later batches too."""
    first = make_op(1, uid="a")
    outbox.put([first, make_op(2, uid="b")], SOURCE, None, now=1.0)
    (claimed_a, _claimed_b) = outbox.claim_due(now=1.0, limit=10)
    kill(outbox, claimed_a)
    later = [make_op(3, uid="a"), make_op(4, uid="a"), make_op(5, uid="b")]
    outbox.put(later, SOURCE, None, now=3.0)
    assert [status_of(outbox, op) for op in later] == ["parked", "parked", "pending"]


def test_dead_result_parks_later_pending_ops_of_that_uid(outbox: SqlOutbox) -> None:
    """complete(dead) parks the UID's later pending ops and leaves other UIDs claimable."""
    ops = [make_op(1, uid="a"), make_op(2, uid="a"), make_op(3, uid="a"), make_op(4, uid="b")]
    outbox.put(ops, SOURCE, None, now=1.0)
    head_a, head_b = outbox.claim_due(now=1.0, limit=10)
    kill(outbox, head_a)
    assert [status_of(outbox, op) for op in ops] == ["dead", "parked", "parked", "inflight"]
    dead = outbox.get(ops[0].op_id)
    assert dead is not None and dead.last_error == "400 bad"
    deliver(outbox, [head_b])
    assert outbox.claim_due(now=5.0, limit=10) == []


def test_retry_unparks_the_uid_in_order(outbox: SqlOutbox) -> None:
    """retry() of a dead op makes it and its parked followers pending, delivered in seq order."""
    ops = [make_op(i, uid="a") for i in range(1, 5)]
    outbox.put(ops, SOURCE, None, now=1.0)
    (head,) = outbox.claim_due(now=1.0, limit=10)
    kill(outbox, head)
    assert outbox.retry(ops[0].op_id, now=10.0)
    retried = outbox.get(ops[0].op_id)
    assert retried is not None and (retried.status, retried.attempts) == ("pending", 0)
    seen: list[int] = []
    for _ in range(4):
        claimed = outbox.claim_due(now=10.0, limit=10)
        assert len(claimed) == 1, "one op of a UID at a time"
        seen += ns(claimed)
        deliver(outbox, claimed, now=11.0)
    assert seen == [1, 2, 3, 4]
    assert not outbox.retry(ops[0].op_id, now=12.0), "a delivered op is not retried"


def test_retry_unparks_only_up_to_the_next_dead_op(outbox: SqlOutbox) -> None:
    """Parked ops behind a second dead op of the same UID stay parked after the first is retried."""
    ops = [
        make_op(1, uid="a", error="e1"),
        make_op(2, uid="a"),
        make_op(3, uid="a", error="e3"),
        make_op(4, uid="a"),
    ]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert outbox.retry(ops[0].op_id, now=2.0)
    assert [status_of(outbox, op) for op in ops] == ["pending", "pending", "dead", "parked"]


def test_retry_dead_requeues_every_dead_and_parked_op(outbox: SqlOutbox) -> None:
    """retry_dead() turns all dead and parked ops pending with attempts reset, due now."""
    ops = [make_op(1, uid="a", error="e"), make_op(2, uid="a"), make_op(3, uid="b", error="e")]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert outbox.retry_dead(now=50.0) == 3
    assert outbox.counts()["pending"] == 3
    claimed = outbox.claim_due(now=50.0, limit=10)
    assert ns(claimed) == [1, 3]
    assert all(op.attempts == 0 and op.next_attempt_at == 50.0 for op in claimed)


# -- claiming ----------------------------------------------------------------------------------


def test_claim_takes_only_the_head_of_each_uid_oldest_first(outbox: SqlOutbox) -> None:
    """claim_due returns one op per (target, uid), in seq order, and marks them inflight."""
    ops = [
        make_op(1, uid="a"),
        make_op(2, uid="b"),
        make_op(3, uid="a"),
        make_op(4, uid="c"),
        make_op(5, uid="b"),
        make_op(6, uid="a", target="other"),
    ]
    outbox.put(ops, SOURCE, None, now=1.0)
    claimed = outbox.claim_due(now=1.0, limit=10)
    assert ns(claimed) == [1, 2, 4, 6]
    assert all(op.status == "inflight" for op in claimed)
    assert outbox.claim_due(now=1.0, limit=10) == [], "followers wait for their head"
    deliver(outbox, claimed[:2])
    assert ns(outbox.claim_due(now=3.0, limit=10)) == [3, 5]


def test_claim_respects_limit_due_time_and_excluded_targets(outbox: SqlOutbox) -> None:
    """Only due ops are claimed, at most `limit`, skipping excluded targets."""
    ops = [make_op(i, uid=f"u{i}", target="slow" if i % 2 else "fast") for i in range(1, 7)]
    outbox.put(ops, SOURCE, None, now=10.0)
    assert outbox.claim_due(now=9.0, limit=10) == []
    assert ns(outbox.claim_due(now=10.0, limit=2, exclude_targets=["slow"])) == [2, 4]
    assert ns(outbox.claim_due(now=10.0, limit=10)) == [1, 3, 5, 6]
    assert outbox.claim_due(now=10.0, limit=0) == []


def test_retry_result_reschedules_and_blocks_the_uid_until_due(outbox: SqlOutbox) -> None:
    """complete(retry) puts the op back pending with its error and due time; followers wait."""
    ops = [make_op(1, uid="a"), make_op(2, uid="a")]
    outbox.put(ops, SOURCE, None, now=1.0)
    (head,) = outbox.claim_due(now=1.0, limit=10)
    outbox.complete(
        [
            OpResult(
                seq=head.seq,
                outcome="retry",
                attempts=1,
                now=2.0,
                next_attempt_at=30.0,
                error="503 unavailable",
                http_status=503,
            )
        ]
    )
    stored = outbox.get(ops[0].op_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.next_attempt_at) == ("pending", 1, 30.0)
    assert (stored.last_error, stored.http_status) == ("503 unavailable", 503)
    assert outbox.next_due_at() == 30.0
    assert outbox.claim_due(now=29.0, limit=10) == []
    (again,) = outbox.claim_due(now=30.0, limit=10)
    assert (again.seq, again.attempts) == (head.seq, 1)


def test_delivered_result_clears_error_and_stores_remote_id(outbox: SqlOutbox) -> None:
    """complete(delivered) records the status code, clears the last error, maps the remote id."""
    op = make_op(1, uid="a")
    outbox.put([op], SOURCE, None, now=1.0)
    (head,) = outbox.claim_due(now=1.0, limit=1)
    outbox.complete([OpResult(head.seq, "retry", 1, now=2.0, next_attempt_at=2.0, error="timeout")])
    (head,) = outbox.claim_due(now=2.0, limit=1)
    outbox.complete(
        [OpResult(head.seq, "delivered", 2, now=3.0, http_status=201, remote_id="rem-1")]
    )
    stored = outbox.get(op.op_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.last_error, stored.http_status) == (
        "delivered",
        2,
        None,
        201,
    )
    assert outbox.get_remote_id("fragment", "a") == "rem-1"
    assert outbox.get_remote_id("fragment", "b") is None


def test_next_due_at_ignores_ops_waiting_behind_their_head(outbox: SqlOutbox) -> None:
    """next_due_at is the earliest due time of claimable ops, None when nothing is claimable."""
    assert outbox.next_due_at() is None
    outbox.put([make_op(1, uid="a"), make_op(2, uid="a")], SOURCE, None, now=4.0)
    assert outbox.next_due_at() == 4.0
    outbox.claim_due(now=4.0, limit=10)
    assert outbox.next_due_at() is None, "op 2 waits for inflight op 1, it is not due"


def test_reset_inflight_makes_claimed_ops_claimable_again(
    outbox: SqlOutbox, open_box: Callable[[], SqlOutbox]
) -> None:
    """After a crash, reset_inflight returns inflight ops to pending, claimable in order."""
    outbox.put([make_op(1, uid="a"), make_op(2, uid="b")], SOURCE, None, now=1.0)
    outbox.claim_due(now=1.0, limit=10)
    if isinstance(outbox, PostgresOutbox):
        assert outbox.reset_inflight() == 0, "a live claimer keeps its ops"
        outbox.close()  # the claimer's connection dies with its process
    outbox = open_box()
    assert outbox.reset_inflight() == 2
    assert outbox.counts()["inflight"] == 0
    assert ns(outbox.claim_due(now=1.0, limit=10)) == [1, 2]


def test_complete_skips_ops_discarded_meanwhile(outbox: SqlOutbox) -> None:
    """A result for an op that no longer exists is ignored; the rest of the batch applies."""
    ops = [make_op(1, uid="a"), make_op(2, uid="b")]
    outbox.put(ops, SOURCE, None, now=1.0)
    claimed = outbox.claim_due(now=1.0, limit=10)
    outbox.complete([OpResult(seq=999, outcome="delivered", attempts=1, now=2.0)])
    deliver(outbox, claimed)
    assert outbox.counts()["delivered"] == 2


# -- operator commands -------------------------------------------------------------------------


def test_counts_lists_every_status(outbox: SqlOutbox) -> None:
    """counts() has a key for every status, zeros included."""
    zero = dict.fromkeys(("pending", "inflight", "delivered", "dead", "parked"), 0)
    assert outbox.counts() == {**zero, "waiting": 0, "skipped": 0}
    ops = [make_op(1, uid="a"), make_op(2, uid="a", error="e"), make_op(3, uid="a")]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert outbox.counts() == {
        **zero,
        "pending": 1,
        "dead": 1,
        "parked": 1,
        **dict.fromkeys(("waiting", "skipped"), 0),
    }


def test_list_is_newest_first_and_filters_by_status(outbox: SqlOutbox) -> None:
    """list() returns newest ops first, optionally of one status, at most `limit`."""
    ops = [make_op(i, uid=f"u{i}", error="e" if i % 2 else None) for i in range(1, 6)]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert ns(outbox.list()) == [5, 4, 3, 2, 1]
    assert ns(outbox.list("dead")) == [5, 3, 1]
    assert ns(outbox.list("pending", limit=1)) == [4]
    assert outbox.list("delivered") == []


def test_discard_dead_op_unparks_its_uid(outbox: SqlOutbox) -> None:
    """Discarding a dead op deletes it and lets the UID's parked ops go out in order."""
    ops = [make_op(1, uid="a", error="e"), make_op(2, uid="a"), make_op(3, uid="a")]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert outbox.discard(ops[0].op_id)
    assert outbox.get(ops[0].op_id) is None
    assert ns(outbox.claim_due(now=1e12, limit=10)) == [2]
    assert not outbox.discard(ops[0].op_id), "already gone"


def test_discard_refuses_inflight_and_promotes_the_next_op(outbox: SqlOutbox) -> None:
    """An inflight op cannot be discarded; discarding a pending head frees its follower."""
    ops = [make_op(1, uid="a"), make_op(2, uid="a"), make_op(3, uid="b"), make_op(4, uid="b")]
    outbox.put(ops, SOURCE, None, now=1.0)
    outbox.claim_due(now=1.0, limit=1)
    assert not outbox.discard(ops[0].op_id)
    assert outbox.discard(ops[2].op_id)
    assert ns(outbox.claim_due(now=1.0, limit=10)) == [4]


def test_purge_deletes_old_ops_of_the_given_statuses(outbox: SqlOutbox) -> None:
    """purge() removes ops in the statuses given that were last updated before the cutoff."""
    ops = [make_op(i, uid=f"u{i}") for i in range(1, 4)]
    outbox.put(ops, SOURCE, None, now=1.0)
    claimed = outbox.claim_due(now=1.0, limit=10)
    deliver(outbox, claimed[:1], now=10.0)
    deliver(outbox, claimed[1:2], now=20.0)
    assert outbox.purge(["delivered"], older_than=15.0) == 1
    assert {k: v for k, v in outbox.counts().items() if v} == {"inflight": 1, "delivered": 1}
    assert outbox.purge([], older_than=1e12) == 0
    with pytest.raises(ValueError, match="unknown statuses"):
        outbox.purge(["gone"], older_than=1.0)  # type: ignore[list-item]


def test_purging_dead_ops_releases_their_parked_followers(outbox: SqlOutbox) -> None:
    """Purging a dead op makes the UID's parked ops pending and claimable again."""
    ops = [make_op(1, uid="a", error="e"), make_op(2, uid="a"), make_op(3, uid="a")]
    outbox.put(ops, SOURCE, None, now=1.0)
    assert outbox.purge(["dead"], older_than=5.0) == 1
    assert [status_of(outbox, op) for op in ops[1:]] == ["pending", "pending"]
    assert ns(outbox.claim_due(now=5.0, limit=10)) == [2]


def test_oldest_pending_created_at_covers_pending_and_inflight(outbox: SqlOutbox) -> None:
    """The oldest pending age counts inflight ops and ignores delivered ones."""
    assert outbox.oldest_pending_created_at() is None
    outbox.put([make_op(1, uid="a")], SOURCE, None, now=1.0)
    outbox.put([make_op(2, uid="b")], SOURCE, None, now=2.0)
    first, second = outbox.claim_due(now=2.0, limit=10)
    assert outbox.oldest_pending_created_at() == 1.0
    deliver(outbox, [first])
    assert outbox.oldest_pending_created_at() == 2.0
    deliver(outbox, [second])
    assert outbox.oldest_pending_created_at() is None


def test_task_map_and_state_store_values(outbox: SqlOutbox) -> None:
    """Remote ids and state values are stored per key and overwritten on set."""
    outbox.set_remote_id("fragment", "a", "r1")
    outbox.set_remote_id("fragment", "a", "r2")
    outbox.set_remote_id("other", "a", "x")
    assert outbox.get_remote_id("fragment", "a") == "r2"
    assert outbox.get_remote_id("other", "a") == "x"
    assert outbox.get_state("cursor") is None
    outbox.set_state("cursor", "1")
    outbox.set_state("cursor", "2")
    assert outbox.get_state("cursor") == "2"


def test_transaction_groups_writes_and_rolls_back_together(tmp_path: Any) -> None:
    """Results and the next claim in one transaction: a failure inside undoes both; another
    thread's write waits for the commit instead of joining the transaction."""
    box = SqliteOutbox(str(tmp_path / "outbox.db"))
    other = SqliteOutbox(str(tmp_path / "outbox.db"), write_lock=box._write_lock)
    try:
        box.put([make_op(1, uid="a"), make_op(2, uid="b")], "src", None, 1.0)
        first = box.claim_due(2.0, 1)
        with pytest.raises(RuntimeError), box.transaction():
            deliver(box, first)
            assert box.claim_due(2.0, 1)
            raise RuntimeError("boom")
        assert [status_of(box, make_op(n, uid=u)) for n, u in ((1, "a"), (2, "b"))] == [
            "inflight",
            "pending",
        ]
        written = threading.Event()

        def write_elsewhere() -> None:
            other.set_state("k", "v")
            written.set()

        with box.transaction():
            deliver(box, first)
            thread = threading.Thread(target=write_elsewhere)
            thread.start()
            assert not written.wait(0.2), "the other thread's write waits for this transaction"
            claimed = box.claim_due(2.0, 1)
        thread.join(5)
        assert written.is_set() and other.get_state("k") == "v"
        assert status_of(box, make_op(1, uid="a")) == "delivered"
        assert ns(claimed) == [2] and status_of(box, make_op(2, uid="b")) == "inflight"
    finally:
        other.close()
        box.close()


def test_a_transaction_belongs_to_the_thread_that_opened_it(outbox: SqlOutbox) -> None:
    """`with outbox.transaction() as tx`: the calls through `tx` are part of it; a call on the
    instance from another thread meanwhile raises instead of joining it or reading its
    uncommitted writes, and the transaction commits unharmed."""
    outbox.put([make_op(1, uid="a"), make_op(2, uid="b")], SOURCE, None, now=1.0)
    errors: list[BaseException] = []

    def elsewhere() -> None:
        for call in (lambda: outbox.get_state("k"), lambda: outbox.set_state("k", "other")):
            try:
                call()
            except BaseException as exc:
                errors.append(exc)

    with outbox.transaction() as tx:
        assert tx is outbox
        claimed = tx.claim_due(2.0, 1)
        tx.set_state("k", "mine")
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the other thread's calls raise, they do not wait"
    assert [type(e) for e in errors] == [OutboxError, OutboxError]
    assert "one thread at a time" in str(errors[0])
    assert ns(claimed) == [1] and status_of(outbox, make_op(1, uid="a")) == "inflight"
    assert outbox.get_state("k") == "mine"
    thread = threading.Thread(target=elsewhere)  # no transaction open: another thread may call
    errors.clear()
    thread.start()
    thread.join(10)
    assert errors == [] and outbox.get_state("k") == "other"
