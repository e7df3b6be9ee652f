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
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Final

from task_bridge.errors import DeliveryError, SourceUnavailable
from task_bridge.events import ChangeEvent, SourcePosition
from task_bridge.sources.base import Commit, Idle, Source, SourceItem
from task_bridge.targets.http import SyncHttp
from task_bridge.targets.humanlambdas import HumanLambdasConfig

KIND: Final = "task_api"
SCHEMA = "humanlambdas"
MAX_PAGES = 1000


def completed_task_sources(target: str, config: HumanLambdasConfig) -> list[Source]:
    """One poller per queue whose completed tasks are events (`poll_completed`)."""
    return [HumanLambdasSource(target, config, queue) for queue in config.polled_queues()]


class HumanLambdasSource:
    def __init__(self, target: str, config: HumanLambdasConfig, queue: str) -> None:
        self.name = f"humanlambdas:{target}:{queue}"
        self.config = config
        self.queue = queue
        self.url = f"{config.base_url.rstrip('/')}/orgs/{config.org}/queues/{queue}/tasks/completed"
        self._http: SyncHttp | None = None
        self._newest: str | None = None
        self._ids_at_newest: set[int] = set()
        self._next_poll = 0.0

    def open(self, checkpoint: str | None) -> None:
        cursor = json.loads(checkpoint) if checkpoint else {}
        self._newest = cursor.get("newest")
        self._ids_at_newest = set(cursor.get("ids", []))
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
        fresh = self._poll()
        if not fresh:
            return [Idle(None)]
        items: list[SourceItem] = [self._event(task) for task in fresh]
        items.append(Commit(self._advance(fresh)))
        return items

    def ack(self, position: str) -> None:
        """Nothing to tell the API: the cursor lives in the outbox."""

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- polling -----------------------------------------------------------------------------------

    def _seen(self, task: dict[str, Any]) -> bool:
        completed = str(task.get("completed_at") or "")
        if self._newest is None:
            return False
        newest = _parse(self._newest)
        at = _parse(completed)
        return at < newest or (at == newest and task.get("id") in self._ids_at_newest)

    def _poll(self) -> list[dict[str, Any]]:
        """New completed tasks, oldest first."""
        assert self._http is not None, "open() first"
        found: dict[int, dict[str, Any]] = {}
        offset = 0
        for _ in range(MAX_PAGES):
            try:
                page = self._http.get_json(
                    self.url, {"offset": offset, "limit": self.config.page_size}
                )
            except DeliveryError as exc:
                raise SourceUnavailable(f"human lambdas {self.queue}: {exc}") from exc
            tasks = page.get("tasks") if isinstance(page, dict) else None
            if not isinstance(tasks, list) or not tasks:
                break
            reached_seen = False
            for task in tasks:
                if not isinstance(task, dict) or "id" not in task:
                    continue
                if self._seen(task):
                    reached_seen = True
                    break
                found[task["id"]] = task
            if reached_seen or not page.get("next"):
                break
            offset += len(tasks)
        return sorted(found.values(), key=lambda t: (_parse(str(t.get("completed_at"))), t["id"]))

    def _advance(self, fresh: list[dict[str, Any]]) -> str:
        newest = str(fresh[-1].get("completed_at"))
        at = _parse(newest)
        ids = {t["id"] for t in fresh if _parse(str(t.get("completed_at"))) == at}
        if self._newest is not None and _parse(self._newest) == at:
            ids |= self._ids_at_newest
        self._newest, self._ids_at_newest = newest, ids
        return json.dumps({"newest": newest, "ids": sorted(ids)})

    def _event(self, task: dict[str, Any]) -> ChangeEvent:
        completed = task.get("completed_at")
        return ChangeEvent(
            op="completed",
            schema=SCHEMA,
            table=self.queue,
            position=SourcePosition(
                kind=KIND, topic=f"humanlambdas/{self.queue}", partition=0, offset=int(task["id"])
            ),
            after=task,
            key={"id": task["id"]},
            commit_time=_parse(str(completed)) if completed else None,
        )


def _parse(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
