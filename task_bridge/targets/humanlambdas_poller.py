"""Completed Human Lambdas tasks as change events (the feedback loop), a `Source` for `Ingest`
(registered as the `humanlambdas` kind's sources: `poll_completed` queues).

Every `poll_interval` it reads `GET .../queues/{queue}/tasks/completed?offset&limit`, newest
first, page by page until it reaches tasks it has already seen (offset paging shifts while
tasks complete: a task may show up twice, never be skipped; ids de-duplicate). New tasks become
events oldest first: `source.kind: task_api`, `schema: humanlambdas`, `table: <queue>`,
`op: completed`, `after` = the task with its `data`. The cursor (newest `completed_at` seen and
the ids at that instant) is the checkpoint, stored with the operations in one outbox
transaction; operation ids hash the task id, so a task is acted on once even across restarts.
On the first run every completed task in the queue is an event.

A completed task whose `completed_at` is missing or is no ISO 8601 time cannot be placed on the
cursor. It still becomes an event (after the dated ones of its poll, `commit_time` None), once:
its id is kept in the cursor (`undated`, the newest `MAX_UNDATED`), and a
`humanlambdas.task_undated` warning names it and the reason. It never stops the walk through the
pages, so tasks completed after it are read as usual; it is found where the API lists it (first,
as Postgres sorts NULLs in a newest-first order; one listed among already-seen tasks is found
on the first run only). A listed item without an integer `id` cannot become an event (its
operations would have no stable id): a `humanlambdas.task_skipped` warning says so, once per
process. An answer that is not a page of tasks is `SourceUnavailable`: retried with backoff.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from task_bridge.errors import DeliveryError, SourceUnavailable
from task_bridge.events import ChangeEvent, SourcePosition
from task_bridge.observability import log
from task_bridge.sources.base import Commit, Idle, Lag, Source, SourceItem
from task_bridge.targets.http import SyncHttp
from task_bridge.targets.humanlambdas import HumanLambdasConfig

KIND: Final = "task_api"
SCHEMA = "humanlambdas"
MAX_PAGES = 1000
MAX_UNDATED = 10_000
"""Ids of undated tasks the cursor remembers; an older one read again is recognised by the
outbox (same operation ids) while its operations are kept."""
ANSWER_CHARS = 200


def completed_task_sources(
    target: str, config: HumanLambdasConfig, logger: logging.Logger
) -> list[Source]:
    """One poller per queue whose completed tasks are events (`poll_completed`)."""
    return [HumanLambdasSource(target, config, q, logger) for q in config.polled_queues()]


class HumanLambdasSource:
    def __init__(
        self,
        target: str,
        config: HumanLambdasConfig,
        queue: str,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = f"humanlambdas:{target}:{queue}"
        self.config = config
        self.queue = queue
        self.log = logger or logging.getLogger("task_bridge")
        self.url = f"{config.base_url.rstrip('/')}/orgs/{config.org}/queues/{queue}/tasks/completed"
        self._http: SyncHttp | None = None
        self._newest: str | None = None
        self._newest_at: datetime | None = None
        self._ids_at_newest: set[int] = set()
        self._undated: set[int] = set()
        self._skipped: set[str] = set()
        self._next_poll = 0.0

    def open(self, checkpoint: str | None) -> None:
        cursor = json.loads(checkpoint) if checkpoint else {}
        self._newest = cursor.get("newest")
        self._newest_at = _parse(self._newest)
        if self._newest is not None and self._newest_at is None:
            log(
                self.log,
                logging.WARNING,
                "humanlambdas.cursor_unreadable",
                source=self.name,
                newest=self._newest,
                reason="the stored cursor's time is no ISO 8601 time: every completed task is"
                " read again; operations already in the outbox are recognised by their ids",
            )
            self._newest = None
        self._ids_at_newest = set(cursor.get("ids", []))
        self._undated = set(cursor.get("undated", []))
        self._http = SyncHttp(
            {"Authorization": f"Token {self.config.token.get_secret_value()}"},
            timeout=self.config.timeout or 10.0,
        )
        self._next_poll = 0.0

    def read(self, max_items: int, timeout: float) -> list[SourceItem]:
        wait = self._next_poll - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))  # the polling cadence, cut to the caller's timeout
            return []
        self._next_poll = time.monotonic() + self.config.poll_interval
        dated, undated = self._poll()
        if not dated and not undated:
            return [Idle(None)]
        items: list[SourceItem] = [self._event(task, at) for task, at in dated]
        items += [self._event(task, None) for task in undated]
        items.append(Commit(self._advance(dated, undated)))
        return items

    def lag(self) -> Lag | None:
        """None: the API says nothing of how many completed tasks wait."""
        return None

    def ack(self, position: str) -> None:
        """Nothing to tell the API: the cursor lives in the outbox."""

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- polling -----------------------------------------------------------------------------------

    def _poll(self) -> tuple[list[tuple[dict[str, Any], datetime]], list[dict[str, Any]]]:
        """New completed tasks: the dated ones oldest first, then the undated ones by id."""
        assert self._http is not None, "open() first"
        dated: dict[int, tuple[dict[str, Any], datetime]] = {}
        undated: dict[int, dict[str, Any]] = {}
        offset = 0
        for _ in range(MAX_PAGES):
            try:
                page = self._http.get_json(
                    self.url, {"offset": offset, "limit": self.config.page_size}
                )
            except DeliveryError as exc:
                raise SourceUnavailable(f"human lambdas {self.queue}: {exc}") from exc
            tasks = page.get("tasks") if isinstance(page, dict) else None
            if not isinstance(tasks, list):
                answer = json.dumps(page, default=str)[:ANSWER_CHARS]
                raise SourceUnavailable(
                    f"human lambdas {self.queue}: the completed-tasks answer at offset {offset}"
                    f" has no task list: {answer}"
                )
            if not tasks:
                break
            reached_seen = False
            for task in tasks:
                task_id = self._task_id(task)
                if task_id is None:
                    continue
                at = _parse(task.get("completed_at"))
                if at is None:
                    if task_id not in self._undated:
                        undated[task_id] = task
                    continue  # not on the cursor's time line: never where the walk stops
                if self._newest_at is not None and (
                    at < self._newest_at
                    or (at == self._newest_at and task_id in self._ids_at_newest)
                ):
                    reached_seen = True
                    break
                dated[task_id] = (task, at)
            if reached_seen or not page.get("next"):
                break
            offset += len(tasks)
        for task_id, task in undated.items():
            self._warn_undated(task_id, task)
        return (
            sorted(dated.values(), key=lambda pair: (pair[1], pair[0]["id"])),
            [undated[task_id] for task_id in sorted(undated)],
        )

    def _task_id(self, task: Any) -> int | None:
        """The task's id, or None (with a warning, once per process) when it has none."""
        if isinstance(task, dict) and type(task.get("id")) is int:
            return int(task["id"])
        shown = json.dumps(task, default=str)[:ANSWER_CHARS]
        if shown not in self._skipped:
            self._skipped.add(shown)
            log(
                self.log,
                logging.WARNING,
                "humanlambdas.task_skipped",
                source=self.name,
                queue=self.queue,
                task=shown,
                reason="a listed completed task without an integer id cannot become an event",
            )
        return None

    def _warn_undated(self, task_id: int, task: dict[str, Any]) -> None:
        value = task.get("completed_at")
        reason = (
            "completed_at is missing"
            if value is None
            else f"completed_at {json.dumps(value, default=str)[:ANSWER_CHARS]} is no ISO 8601 time"
        )
        log(
            self.log,
            logging.WARNING,
            "humanlambdas.task_undated",
            source=self.name,
            queue=self.queue,
            task_id=task_id,
            reason=f"{reason}: it is an event now (no commit_time), once; the cursor stays put",
        )

    def _advance(
        self, dated: list[tuple[dict[str, Any], datetime]], undated: list[dict[str, Any]]
    ) -> str:
        if dated:
            newest_task, at = dated[-1]
            ids = {task["id"] for task, when in dated if when == at}
            if self._newest_at == at:
                ids |= self._ids_at_newest
            self._newest, self._newest_at = str(newest_task["completed_at"]), at
            self._ids_at_newest = ids
        self._undated |= {task["id"] for task in undated}
        if len(self._undated) > MAX_UNDATED:
            self._undated = set(sorted(self._undated)[-MAX_UNDATED:])
        cursor: dict[str, Any] = {"newest": self._newest, "ids": sorted(self._ids_at_newest)}
        if self._undated:
            cursor["undated"] = sorted(self._undated)
        return json.dumps(cursor)

    def _event(self, task: dict[str, Any], completed: datetime | None) -> ChangeEvent:
        return ChangeEvent(
            op="completed",
            schema=SCHEMA,
            table=self.queue,
            position=SourcePosition(
                kind=KIND, topic=f"humanlambdas/{self.queue}", partition=0, offset=task["id"]
            ),
            after=task,
            key={"id": task["id"]},
            commit_time=completed,
        )


def _parse(value: Any) -> datetime | None:
    """An ISO 8601 time (UTC when it names no zone), or None when `value` is none."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
