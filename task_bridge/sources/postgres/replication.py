"""A logical replication stream over psycopg's `pq` layer (psycopg 3 has no replication API).

Frames (see shared/reference/pgoutput.md): server -> client CopyData holding XLogData `w`
(25-byte header + one pgoutput message) or a primary keepalive `k`; client -> server standby
status updates `r` carrying the written/flushed/applied positions.
"""

from __future__ import annotations

import select
import struct
import time
from datetime import UTC, datetime

import psycopg
from psycopg import pq, sql

from task_bridge.errors import SourceError, SourceUnavailable
from task_bridge.events import format_lsn
from task_bridge.sources.postgres.pgoutput import PG_EPOCH

SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"
)
CONNECT_TIMEOUT_S = 10
_STATUS = struct.Struct(">cQQQqB")


def _now_pg_micros() -> int:
    return int((datetime.now(UTC) - PG_EPOCH).total_seconds() * 1_000_000)


def describe(exc: BaseException) -> str:
    """An error message without secrets (psycopg never echoes the password)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_transient(sqlstate: str) -> bool:
    """Worth retrying: connection (08), resources (53), shutdown (57), slot in use (55006)."""
    return sqlstate[:2] in ("08", "53", "57") or sqlstate == "55006"


class ReplicationStream:
    """One `START_REPLICATION` session: CopyData in, standby status updates out."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: psycopg.Connection | None = None

    @property
    def pgconn(self) -> pq.abc.PGconn:
        assert self.conn is not None, "not connected"
        return self.conn.pgconn

    def start(self, slot: str, publication: str, start_lsn: int) -> None:
        try:
            self.conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                replication="database",
                options=SESSION_OPTIONS,
                connect_timeout=CONNECT_TIMEOUT_S,
            )
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(
                f"cannot open a replication connection: {describe(exc)}"
            ) from exc
        query = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})"
        ).format(
            sql.Identifier(slot),
            sql.SQL(format_lsn(start_lsn)),
            sql.Literal(sql.Identifier(publication).as_string(self.conn)),
        )
        pgconn = self.pgconn
        try:
            pgconn.send_query(query.as_bytes(self.conn))
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    break
                if time.monotonic() > deadline:
                    raise SourceUnavailable("START_REPLICATION timed out")
                select.select([pgconn.socket], [], [], 0.5)
            result = pgconn.get_result()
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"START_REPLICATION failed: {describe(exc)}") from exc
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = pgconn.error_message.decode("utf-8", "replace").strip()
            sqlstate = ""
            if result is not None and result.error_message:
                message = result.error_message.decode("utf-8", "replace").strip()
                sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
            if is_transient(sqlstate):
                raise SourceUnavailable(f"START_REPLICATION failed: {message}")
            raise SourceError(f"START_REPLICATION failed: {message}")

    def read(self, timeout: float) -> bytes | None:
        """The next CopyData payload, or None if nothing arrived within `timeout` seconds."""
        pgconn = self.pgconn
        try:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes == 0:  # nothing buffered: read the socket, waiting up to `timeout`
                readable, _, _ = select.select([pgconn.socket], [], [], max(0.0, timeout))
                if readable:
                    pgconn.consume_input()
                    nbytes, data = pgconn.get_copy_data(1)
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"replication connection lost: {describe(exc)}") from exc
        if nbytes > 0:
            return bytes(data)
        if nbytes == 0:
            return None
        result = pgconn.get_result()
        message = result.error_message.decode("utf-8", "replace").strip() if result else ""
        raise SourceUnavailable(f"replication stream ended by the server: {message or 'CopyDone'}")

    def send_status(self, written: int, flushed: int, reply: bool = False) -> None:
        """Standby status update: flushed (= applied) advances the slot's confirmed_flush_lsn."""
        payload = _STATUS.pack(b"r", written, flushed, flushed, _now_pg_micros(), 1 if reply else 0)
        try:
            self.pgconn.put_copy_data(payload)
            self.pgconn.flush()
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"replication connection lost: {describe(exc)}") from exc

    def end_copy(self) -> None:
        """Tell the server we are done streaming (CopyDone); it ends the walsender's COPY."""
        try:
            self.pgconn.put_copy_end()
            self.pgconn.flush()
        except psycopg.OperationalError as exc:
            raise SourceUnavailable(f"replication connection lost: {describe(exc)}") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None
