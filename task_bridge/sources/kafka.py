"""Kafka as a change source: Debezium envelopes (or plain JSON rows), consumer-group scale-out.

The position is a JSON map `{"topic:partition": next_offset}` covering every partition this
outbox has consumed; it is stored with the operations in one outbox transaction (G1/G2), like
the Postgres LSN. On assignment each partition resumes at the later of the stored offset and
the group's committed one (records below it are skipped). Re-reading is harmless (operation
ids hash topic, partition and offset, so this outbox ignores what it already holds); skipping
is not possible. After each
outbox commit the offsets are also committed to Kafka, best effort, so lag tools see progress;
a commit that fails is a `kafka.commit_failed` warning (the next acknowledgement commits again,
and the outbox checkpoint stays the truth for this bridge).

Several bridges in one group split the partitions; each has its own outbox. When a bridge dies
its partitions move to the others, which resume from the group's committed offsets: a record
whose operations the dead bridge had stored but not yet committed to Kafka is stored again by
the new owner, so a task may see the same operation twice (delivery is idempotent for
Fragment upserts; at-least-once in general). The poll happens in `read()` on the ingest
thread, so a rebalance can only happen between batches: the batch in hand is always whole.
Records that cannot be decoded become dead entries (`Poison`) and reading goes on.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from task_bridge.errors import SourceUnavailable
from task_bridge.events import ChangeEvent, Checkpoint, SourcePosition
from task_bridge.observability import log
from task_bridge.sources.base import Commit, Lag, Poison, SourceItem
from task_bridge.sources.config import KafkaSourceConfig
from task_bridge.sources.debezium import (
    JsonMapping,
    PoisonMessage,
    decode_debezium,
    decode_plain_json,
)
from task_bridge.sources.kafka_connect import column_types

RAW_MAX_BYTES = 64 * 1024
COMMIT_WARN_INTERVAL_S = 60.0
"""A run of failing offset commits warns at its first failure, then at most this often."""
# Fast group joins: the defaults take ~20 s per rebalance
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 1_000,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
}


class KafkaSource:
    def __init__(self, config: KafkaSourceConfig, logger: logging.Logger) -> None:
        self.config = config
        self.log = logger
        self.name = f"kafka:{config.group_id}"
        # Threads: the ingest thread calls every Source method, and kafka-python runs the
        # commit callback (`_committed`) on it too, inside poll()/commit_async(). The rebalance
        # listener runs on kafka-python's IO thread: it adds to `_newly_assigned` and removes
        # from `_floor`, so those two are only touched under `_lock`. `_offsets` and the
        # commit-failure counters belong to the ingest thread alone.
        self._lock = threading.Lock()
        self._offsets: dict[str, int] = {}
        self._consumer: KafkaConsumer | None = None
        self._newly_assigned: set[TopicPartition] = set()
        self._floor: dict[TopicPartition, int] = {}
        self._commit_failures = 0
        self._commit_warned_at = 0.0
        self._mapping = (
            JsonMapping.from_mapping(config.json_mapping) if config.json_mapping else None
        )
        self._types = column_types(config.column_types)

    # -- Source --------------------------------------------------------------------------------

    def open(self, checkpoint: str | None) -> None:
        self._offsets = {str(k): int(v) for k, v in json.loads(checkpoint or "{}").items()}
        options = {**CONSUMER_DEFAULTS, **self.config.client}
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.config.bootstrap_servers,
                group_id=self.config.group_id,
                max_poll_records=self.config.max_poll_records,
                **options,
            )
        except KafkaError as exc:  # e.g. no broker answers at bootstrap_servers
            raise SourceUnavailable(
                f"kafka at {self.config.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        listener = _Listener(self)
        if self.config.topic_pattern:
            consumer.subscribe(pattern=self.config.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=self.config.topics, listener=listener)
        self._consumer = consumer

    def read(self, max_items: int, timeout: float) -> list[SourceItem]:
        assert self._consumer is not None, "open() first"
        try:
            batches = self._consumer.poll(
                timeout_ms=int(timeout * 1000), max_records=max(1, max_items)
            )
        except KafkaError as exc:
            raise SourceUnavailable(f"kafka: {type(exc).__name__}: {exc}") from exc
        self._settle_assignments()
        if not batches:
            return []
        with self._lock:
            floors = {tp: self._floor.get(tp, 0) for tp in batches}
        items: list[SourceItem] = []
        for tp, records in batches.items():
            floor = floors[tp]
            for record in records:
                if record.offset < floor:
                    continue  # this outbox already holds it (stored ahead of Kafka's commit)
                item = self._decode(record)
                if item is not None:
                    items.append(item)
                self._offsets[f"{tp.topic}:{tp.partition}"] = record.offset + 1
        # Only the partitions this consumer holds, merged into the stored ones (PartitionOffsets),
        # so bridges sharing one outbox never write back stale offsets of each other's partitions.
        held = {f"{tp.topic}:{tp.partition}" for tp in self._consumer.assignment()}
        held |= {f"{tp.topic}:{tp.partition}" for tp in batches}
        offsets = {key: offset for key, offset in self._offsets.items() if key in held}
        items.append(Commit(PartitionOffsets(json.dumps(offsets, sort_keys=True))))
        return items

    def lag(self) -> Lag | None:
        """None: the group's lag is the broker's to report (consumer-group tooling)."""
        return None

    def ack(self, position: str) -> None:
        """Commit the stored offsets of the partitions this consumer owns to Kafka."""
        if self._consumer is None:
            return
        offsets = json.loads(position)
        owned = {
            tp: OffsetAndMetadata(offsets[f"{tp.topic}:{tp.partition}"], "", -1)
            for tp in self._consumer.assignment()
            if f"{tp.topic}:{tp.partition}" in offsets
        }
        if not owned:
            return
        # Asynchronous: a commit during a rebalance would block reading for up to the request
        # timeout. The outbox holds the truth; Kafka's copy is for lag tools and new owners.
        self._consumer.commit_async(owned, callback=self._committed)

    def _committed(self, offsets: Any, error: Any) -> None:
        """kafka-python's commit callback: `error` is an exception, or the broker's response.

        A failure loses nothing: the operations and the checkpoint are already in the outbox,
        which this bridge resumes from; the next acknowledgement commits newer offsets. Only
        a new owner of a partition (after a rebalance) starts lower and re-reads more.
        """
        if not isinstance(error, BaseException):
            self._commit_failures = 0
            return
        self._commit_failures += 1
        now = time.monotonic()
        if self._commit_failures > 1 and now - self._commit_warned_at < COMMIT_WARN_INTERVAL_S:
            return
        self._commit_warned_at = now
        log(
            self.log,
            logging.WARNING,
            "kafka.commit_failed",
            error=f"{type(error).__name__}: {error}",
            offsets={f"{tp.topic}:{tp.partition}": o.offset for tp, o in dict(offsets).items()},
            failed_in_a_row=self._commit_failures,
            next="the offsets are committed again with the next acknowledgement; the outbox"
            " checkpoint is what this bridge resumes from, so nothing is lost (a new owner of"
            " these partitions may re-read records the outbox already holds)",
        )

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close(autocommit=False)

    # -- records -------------------------------------------------------------------------------

    def _skipped_topic(self, topic: str) -> bool:
        return topic.startswith(self.config.heartbeat_topic_prefix) or topic.endswith(
            ".transaction"
        )

    def _decode(self, record: Any) -> ChangeEvent | Poison | None:
        topic, partition, offset = record.topic, record.partition, record.offset
        if self._skipped_topic(topic):
            return None
        try:
            if self.config.format == "json":
                assert self._mapping is not None
                return decode_plain_json(
                    record.value,
                    self._mapping,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    column_types=self._types,
                )
            return decode_debezium(
                record.key,
                record.value,
                topic=topic,
                partition=partition,
                offset=offset,
                column_types=self._types,
            )
        except PoisonMessage as exc:
            return Poison(
                SourcePosition(kind="kafka", topic=topic, partition=partition, offset=offset),
                exc.reason,
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "key_b64": _b64(record.key),
                    "value_b64": _b64(record.value),
                },
            )

    def _settle_assignments(self) -> None:
        """For partitions assigned in the last poll: resume at the later of the outbox's and
        the group's committed offset. (Not in the rebalance callback: kafka-python runs it on
        its IO thread, where blocking calls such as `committed()` are not allowed.)"""
        assert self._consumer is not None
        with self._lock:
            partitions, self._newly_assigned = self._newly_assigned, set()
        if not partitions:
            return
        for tp in partitions:
            stored = self._offsets.get(f"{tp.topic}:{tp.partition}")
            try:
                committed = self._consumer.committed(tp)
            except KafkaError:
                committed = None
            known = [o for o in (stored, committed) if o is not None]
            if not known:
                continue
            with self._lock:
                self._floor[tp] = max(known)
            if tp in self._consumer.assignment() and self._consumer.position(tp) < max(known):
                self._consumer.seek(tp, max(known))
        log(
            self.log,
            logging.INFO,
            "kafka.assigned",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in partitions),
        )


class PartitionOffsets(Checkpoint):
    """`{"topic:partition": next_offset}` of the partitions one consumer holds. Stored, it is
    merged key by key into the stored map: bridges sharing one outbox split a group's
    partitions, and each writes only the offsets of its own."""

    __slots__ = ()

    def merge(self, stored: str | None) -> str:
        held = json.loads(self)
        known = json.loads(stored) if stored is not None and stored.startswith("{") else None
        if not isinstance(known, dict):  # nothing stored yet (or not a map: replaced)
            return str(self)
        return json.dumps({**known, **held}, sort_keys=True)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread: touches the source only under its `_lock`."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with self.source._lock:
            for tp in revoked:
                self.source._floor.pop(tp, None)
        log(
            self.source.log,
            logging.INFO,
            "kafka.revoked",
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
        )

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self.source._lock:
            self.source._newly_assigned |= set(assigned)  # settled by read(), off the IO thread


def _b64(data: bytes | None) -> str | None:
    if data is None:
        return None
    return base64.b64encode(data[:RAW_MAX_BYTES]).decode()
