"""The Human Lambdas completed-tasks poller against the fake API over real HTTP: what becomes
an event, what the cursor skips, and what a task the poller cannot place in time does."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from task_bridge.errors import SourceUnavailable
from task_bridge.events import ChangeEvent
from task_bridge.fakes.humanlambdas import FakeHumanLambdas
from task_bridge.sources.base import Commit, Idle, SourceItem
from task_bridge.targets.humanlambdas import HumanLambdasConfig
from task_bridge.targets.humanlambdas_poller import HumanLambdasSource

TOKEN = "hl-token"
QUEUE = "reviews"


@pytest.fixture
def fake() -> Iterator[FakeHumanLambdas]:
    with FakeHumanLambdas(token=TOKEN) as api:
        yield api


def _source(fake: FakeHumanLambdas, page_size: int = 2) -> HumanLambdasSource:
    config = HumanLambdasConfig(
        kind="humanlambdas",
        base_url=fake.url,
        token=TOKEN,
        org="acme",
        queue=QUEUE,
        poll_completed=True,
        poll_interval=0.01,
        page_size=page_size,
    )
    return HumanLambdasSource("hl", config, QUEUE)


def _create(fake: FakeHumanLambdas, n: int) -> list[int]:
    ids = []
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"Token {TOKEN}"}) as http:
        for i in range(n):
            answer = http.post(f"/orgs/acme/queues/{QUEUE}/tasks/create", json={"data": {"n": i}})
            assert answer.status_code == 201
            ids.append(answer.json()["id"])
    return ids


def _poll(source: HumanLambdasSource, timeout: float = 10.0) -> list[SourceItem]:
    """One poll's items: read until the poller answered (events + Commit, or Idle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = source.read(100, 0.2)
        if items:
            return items
    raise AssertionError("the poller did not poll")


def _events(items: list[SourceItem]) -> list[ChangeEvent]:
    return [i for i in items if isinstance(i, ChangeEvent)]


def _checkpoint(items: list[SourceItem]) -> str | None:
    commits = [i.position for i in items if isinstance(i, Commit)]
    return commits[-1] if commits else None


def _warnings(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.__dict__["ctx"] for r in caplog.records if r.getMessage() == event]


def test_a_task_without_a_readable_completed_at_is_an_event_once_and_blocks_nothing(
    fake: FakeHumanLambdas, caplog: pytest.LogCaptureFixture
) -> None:
    """A completed task whose `completed_at` is missing or not a time becomes an event (no
    commit_time) with a warning naming its id and the reason, exactly once across polls and
    restarts; tasks completed after it still become events, whether it sorts first (as
    NULLs do) or not."""
    first, missing, garbled, later, undated_later = _create(fake, 5)
    fake.complete(first)
    fake.complete_as(missing, None)
    fake.complete_as(garbled, "yesterday")
    source = _source(fake)
    caplog.set_level(logging.WARNING, logger="task_bridge")
    source.open(None)
    try:
        items = _poll(source)
        events = _events(items)
        assert sorted(e.key["id"] for e in events) == [first, missing, garbled]
        by_id = {e.key["id"]: e for e in events}
        assert by_id[first].commit_time is not None
        assert by_id[missing].commit_time is None and by_id[garbled].commit_time is None
        assert by_id[garbled].after["completed_at"] == "yesterday"
        undated = {w["task_id"]: w for w in _warnings(caplog, "humanlambdas.task_undated")}
        assert set(undated) == {missing, garbled}
        assert "missing" in undated[missing]["reason"]
        assert '"yesterday"' in undated[garbled]["reason"]
        assert undated[garbled]["queue"] == QUEUE
        cursor = _checkpoint(items)
        assert cursor is not None

        fake.complete(later)
        items = _poll(source)
        assert [e.key["id"] for e in _events(items)] == [later], "nothing again, nothing held"
        cursor = _checkpoint(items) or cursor
    finally:
        source.close()

    caplog.clear()
    restarted = _source(fake)
    restarted.open(cursor)
    try:
        assert _poll(restarted) == [Idle(None)], "the cursor remembers the undated tasks"
        fake.complete_as(undated_later, None)
        items = _poll(restarted)
        assert [e.key["id"] for e in _events(items)] == [undated_later]
        assert [w["task_id"] for w in _warnings(caplog, "humanlambdas.task_undated")] == [
            undated_later
        ]
        assert _checkpoint(items) is not None
        assert _poll(restarted) == [Idle(None)]
    finally:
        restarted.close()


def test_a_page_without_a_task_list_is_a_retried_error_naming_the_answer(
    fake: FakeHumanLambdas,
) -> None:
    """An answer that is not a page of tasks (a proxy's error page served as 200, say) is
    `SourceUnavailable` (ingest retries with backoff and logs why), not an empty queue."""
    (task,) = _create(fake, 1)
    fake.complete(task)
    fake.add_fault({"method": "GET", "status": 200, "body": {"detail": "maintenance"}})
    source = _source(fake)
    source.open(None)
    try:
        with pytest.raises(SourceUnavailable, match="maintenance"):
            _poll(source)
    finally:
        source.close()


def test_a_listed_task_without_an_integer_id_is_a_warning_once(
    fake: FakeHumanLambdas, caplog: pytest.LogCaptureFixture
) -> None:
    """An item of the completed list without an integer id cannot be an event (its operations
    would have no stable id): `humanlambdas.task_skipped` shows it, once per process."""
    page = {"tasks": [{"title": "no id"}, {"id": "abc", "data": {}}], "next": None}
    fake.add_fault({"method": "GET", "status": 200, "body": page})
    source = _source(fake)
    caplog.set_level(logging.WARNING, logger="task_bridge")
    source.open(None)
    try:
        assert _poll(source) == [Idle(None)]
        assert _poll(source) == [Idle(None)]
    finally:
        source.close()
    skipped = _warnings(caplog, "humanlambdas.task_skipped")
    assert [w["task"] for w in skipped] == ['{"title": "no id"}', '{"id": "abc", "data": {}}']
    assert all("integer id" in w["reason"] for w in skipped)
