"""Upkeep: outbox gauges, the retention purge and each source's lag, logged by threshold."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from task_bridge.errors import SourceUnavailable
from task_bridge.observability import Metrics
from task_bridge.outbox.base import OpResult
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outbox.sqlite import SqliteOutbox
from task_bridge.sources.base import Lag
from task_bridge.upkeep import Upkeep
from tests.support.ops import make_op


class _LaggingSource:
    """A source that only reports a lag (or fails to)."""

    name = "lagging"

    def __init__(self, lag: Lag | Exception | None) -> None:
        self._lag = lag

    def lag(self) -> Lag | None:
        if isinstance(self._lag, Exception):
            raise self._lag
        return self._lag


def test_upkeep_sets_gauges_purges_and_logs_lag_by_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = SqliteOutbox(str(tmp_path / "outbox.db"))
    outbox.put([make_op(1, uid="a"), make_op(2, uid="b")], "test", None, now=1.0)
    (old,) = outbox.claim_due(2.0, 1)
    outbox.complete([OpResult(old.seq, "delivered", 1, 2.0)])  # delivered long ago
    sources = [
        _LaggingSource(Lag("slot.lag", {"slot": "s1"}, 5000, 1000)),
        _LaggingSource(Lag("slot.lag", {"slot": "s2"}, 10, 1000)),
        _LaggingSource(SourceUnavailable("down")),
        _LaggingSource(None),
    ]
    metrics = Metrics()

    async def go() -> None:
        box = LoopOutbox(outbox)
        try:
            await Upkeep(box, sources, metrics, logging.getLogger("task_bridge"), 60.0).once()
        finally:
            await box.aclose()

    with caplog.at_level(logging.DEBUG, logger="task_bridge"):
        asyncio.run(go())
    lines = {(r.levelname, r.getMessage(), str(getattr(r, "ctx", ""))) for r in caplog.records}
    assert any(level == "WARNING" and "s1" in ctx for level, _, ctx in lines), lines
    assert any(level == "DEBUG" and "s2" in ctx for level, _, ctx in lines), lines
    assert any(msg == "outbox.purged" for _, msg, _ in lines), "the old delivered op"
    assert metrics.outbox.labels("pending")._value.get() == 1
