"""The Postgres source: publication + slot setup, pgoutput stream, acknowledgements (G1, G9).

Positions reported to the server: written = the highest LSN received; flushed = applied = the
last position given to `ack()`, never more (G1). Between transactions a keepalive becomes
`Idle(wal_end)`, which the caller acks once earlier work is durable, so a slot whose tables are
quiet while the rest of the database is busy does not pin WAL (G9).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence

import psycopg

from task_bridge import defaults
from task_bridge.errors import SourceError, SourceUnavailable
from task_bridge.events import format_lsn, parse_lsn
from task_bridge.observability import log
from task_bridge.sources.base import Commit, Idle, Lag, SourceItem
from task_bridge.sources.postgres.lag import slot_lag_bytes
from task_bridge.sources.postgres.pgoutput import PgOutputDecoder
from task_bridge.sources.postgres.replication import CONNECT_TIMEOUT_S, ReplicationStream, describe
from task_bridge.sources.postgres.slot import (
    SCHEMA_PUBLICATION_MIN,
    ensure_publication,
    ensure_slot,
    primary_keys,
    published_objects,
    whole_schemas,
)
from task_bridge.sources.postgres.types import base_types_at

ACK_MIN_INTERVAL_S = 0.1
"""`ack()` sends at most one status update per this interval (the next read sends the rest)."""
_XLOG = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">QqB")
_XLOGDATA, _KEEPALIVE_MSG = 0x77, 0x6B  # 'w', 'k'
_XLOG_HEADER = 25


class PostgresSource:
    """Reads a pgoutput slot.

    `tables`: `schema.table` names or globs (`public.*` publishes the schema). `status_interval`:
    how often to report our position and, when the stream is quiet, ask the server for a
    keepalive whose position can be confirmed while idle.
    """

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        tables: Sequence[str],
        status_interval: float = 10.0,
        logger: logging.Logger | None = None,
        lag_warn_bytes: int = defaults.LAG_WARN_BYTES,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.tables = list(tables)
        self.status_interval = max(status_interval, ACK_MIN_INTERVAL_S)
        self.log = logger or logging.getLogger("task_bridge")
        self.lag_warn_bytes = lag_warn_bytes
        self.name = f"postgres:{slot}"
        self.stream: ReplicationStream | None = None
        self.decoder = PgOutputDecoder()
        self.received = 0
        self.acked = 0
        self._status_sent_at = 0.0
        self._status_dirty = False
        self._last_message_at = 0.0

    # -- Source protocol -----------------------------------------------------------------------

    def lag(self) -> Lag | None:
        """WAL bytes the slot holds back (its own short connection; thread-safe)."""
        held = slot_lag_bytes(self.dsn, self.slot)
        if held is None:
            return None
        return Lag("slot.lag", {"slot": self.slot}, held, self.lag_warn_bytes)

    def open(self, checkpoint: str | None) -> None:
        self.close()
        start = parse_lsn(checkpoint) if checkpoint else 0
        try:
            with psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn:
                change = ensure_publication(conn, self.publication, self.tables)
                if change in ("created", "altered"):
                    log(
                        self.log,
                        logging.INFO,
                        "publication.updated",
                        publication=self.publication,
                        tables=self.tables,
                    )
                elif change == "kept":
                    self._log_kept(conn)
                self._log_enumerated(conn)
                created, confirmed = ensure_slot(conn, self.slot)
                if created:
                    log(self.log, logging.INFO, "slot.created", slot=self.slot)
                keys = primary_keys(conn, self.publication)
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"cannot connect to Postgres: {describe(exc)}") from exc
        except psycopg.Error as exc:
            raise SourceError(f"setting up publication/slot failed: {describe(exc)}") from exc
        self.decoder = PgOutputDecoder(keys, base_types=base_types_at(self.dsn))
        stream = ReplicationStream(self.dsn)
        try:
            stream.start(self.slot, self.publication, start)
        except SourceError:
            stream.close()
            raise
        self.stream = stream
        # the server resumes at max(start, confirmed_flush_lsn): report nothing lower than that
        self.received = self.acked = max(start, confirmed)
        self._status_dirty = False
        self._last_message_at = time.monotonic()
        self._status_sent_at = 0.0

    def read(self, max_items: int, timeout: float) -> list[SourceItem]:
        stream = self._stream()
        items: list[SourceItem] = []
        deadline = time.monotonic() + timeout
        decode = self.decoder.decode
        while len(items) < max_items:
            now = time.monotonic()
            if items:
                wait = 0.0
            else:
                # wake up for the periodic status update even inside a long blocking read
                wait = min(deadline, self._status_sent_at + self.status_interval) - now
            msg = stream.read(wait)
            if msg is None:
                if items or time.monotonic() >= deadline:
                    break
                self._maybe_send_status()
                continue
            self._last_message_at = time.monotonic()
            kind = msg[0]
            if kind == _XLOGDATA:
                data_start = _XLOG.unpack_from(msg, 1)[0]
                if data_start > self.received:
                    self.received = data_start
                items.extend(decode(msg[_XLOG_HEADER:]))
            elif kind == _KEEPALIVE_MSG:
                wal_end, _ts, reply = _KEEPALIVE.unpack_from(msg, 1)
                if not self.decoder.in_transaction:
                    self.received = max(self.received, wal_end)
                    items.append(Idle(format_lsn(wal_end)))
                if reply:
                    self._send_status()
            # anything else ('s' primary status in PG 19+...): not for us
        self._maybe_send_status()
        return items

    def ack(self, position: str) -> None:
        lsn = parse_lsn(position)
        if lsn > self.acked:
            self.acked = lsn
            self._status_dirty = True
            if self.stream is not None:
                self._maybe_send_status()

    def close(self) -> None:
        """Report the acked position, end the COPY and disconnect; safe to call twice."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        try:
            if stream.conn is not None and not stream.conn.closed:
                self._send_status_on(stream)
                stream.end_copy()
        except SourceUnavailable:
            pass  # the connection is already gone; the stored checkpoint is what counts
        finally:
            stream.close()

    def _log_enumerated(self, conn: psycopg.Connection) -> None:
        schemas = whole_schemas(self.tables)
        if schemas and conn.info.server_version < SCHEMA_PUBLICATION_MIN:
            log(
                self.log,
                logging.WARNING,
                "publication.schema_enumerated",
                publication=self.publication,
                schemas=schemas,
                reason="Postgres 14 has no FOR TABLES IN SCHEMA: the publication holds the"
                " schemas' tables as they are now, and is brought in step at every start and"
                " reconnect; changes to a table created later are read only from then on",
            )

    def _log_kept(self, conn: psycopg.Connection) -> None:
        named = f" ({', '.join(self.tables)} match no table)" if self.tables else ""
        log(
            self.log,
            logging.WARNING,
            "publication.kept",
            publication=self.publication,
            published=published_objects(conn, self.publication),
            reason=f"no rule names a table of this database{named}: the publication is left"
            " as it is (the bridge never drops one); its changes are read and match no rule",
        )

    # -- status updates ------------------------------------------------------------------------

    def _stream(self) -> ReplicationStream:
        if self.stream is None:
            raise SourceError("the Postgres source is not open")
        return self.stream

    def _send_status(self, reply: bool = False) -> None:
        self._send_status_on(self._stream(), reply)

    def _send_status_on(self, stream: ReplicationStream, reply: bool = False) -> None:
        stream.send_status(max(self.received, self.acked), self.acked, reply)
        self._status_sent_at = time.monotonic()
        self._status_dirty = False

    def _maybe_send_status(self) -> None:
        now = time.monotonic()
        since = now - self._status_sent_at
        if self._status_dirty and since >= ACK_MIN_INTERVAL_S:
            self._send_status()
        elif since >= self.status_interval:
            # quiet stream: ask for a keepalive, whose position we can confirm when idle (G9)
            self._send_status(reply=now - self._last_message_at >= self.status_interval)


__all__ = ["Commit", "Idle", "PostgresSource"]
