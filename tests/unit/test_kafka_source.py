"""The Kafka source's own bookkeeping, without a broker: what a failed offset commit says."""

from __future__ import annotations

import logging

import pytest
from kafka import TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from task_bridge.sources.config import KafkaSourceConfig
from task_bridge.sources.kafka import KafkaSource


def test_a_failed_offset_commit_is_a_warning_with_the_reason_and_what_happens_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka-python's commit callback with an error logs `kafka.commit_failed` at warning with
    the error, the offsets and what happens next; a run of failures warns once, then again
    after a success; a successful commit is silent."""
    config = KafkaSourceConfig(bootstrap_servers="127.0.0.1:1", topics=["orders"])
    source = KafkaSource(config, logging.getLogger("task_bridge"))
    offsets = {TopicPartition("orders", 0): OffsetAndMetadata(7, "", -1)}
    error = CommitFailedError("the group rebalanced")
    with caplog.at_level(logging.DEBUG, logger="task_bridge"):
        source._committed(offsets, error)
        source._committed(offsets, error)
        source._committed(offsets, object())  # an OffsetCommitResponse: success
        source._committed(offsets, error)
    assert [r.getMessage() for r in caplog.records] == ["kafka.commit_failed"] * 2
    first = caplog.records[0]
    ctx = first.__dict__["ctx"]
    assert first.levelno == logging.WARNING
    assert "CommitFailedError" in ctx["error"] and "the group rebalanced" in ctx["error"]
    assert ctx["offsets"] == {"orders:0": 7}
    assert "outbox" in ctx["next"] and "again" in ctx["next"]
