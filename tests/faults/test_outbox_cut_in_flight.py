"""G4 when a bridge's Postgres outbox connection is cut while it delivers: nothing it may
still have on the way is overtaken by the ops that follow it.

- An op whose claim was never committed is not sent. (The chaos campaign's
  `[1, 2, 3, 4, 5, 4, 5, 6, 7]`: a bridge's connection was cut while it committed a result
  together with the claim of the task's next op; it sent that op anyway while draining, and the
  bridge after it re-sent both.) The commit fails for real: a deferred constraint trigger on
  `ops` ends the committing session when the task's second op is claimed.
- A bridge cut off from its outbox stops sending at once: what it learns cannot be stored, and
  a bridge sharing the outbox may be sending the same ops by now.
- A bridge taking over a cut-off bridge's ops waits out that bridge's request before it sends
  them and the task's next ops.

Each delivery loop runs on a thread and event loop of its own, like a bridge process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from task_bridge.delivery import Delivery
from task_bridge.errors import OutboxUnavailable
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.observability import Metrics
from task_bridge.outbox.offloop import LoopOutbox
from task_bridge.outbox.postgres import APPLICATION_NAME, PostgresOutbox
from task_bridge.retry import RetryPolicy
from task_bridge.rules.chains import ChainRenderer
from task_bridge.targets.base import TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget
from tests.support.ops import make_op
from tests.support.wait import wait_until

TOKEN = "cut-token"
SCHEMA = "cut_outbox"

# At commit (deferred), in the session claiming op `n = 1`: end this very session; pg_sleep
# lets the termination land before the commit can finish, so the transaction is rolled back.
CUT_AT_COMMIT = f"""
CREATE FUNCTION {SCHEMA}.cut_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(30);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER cut_at_commit AFTER UPDATE ON {SCHEMA}.ops
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'inflight' AND NEW.payload = '{{"n":1}}')
    EXECUTE FUNCTION {SCHEMA}.cut_at_commit();
"""


@pytest.fixture
def fake() -> Iterator[FakeFragment]:
    with FakeFragment(token=TOKEN) as server:
        yield server


class _Bridge:
    """Delivery from one outbox to the fake, on a thread of its own, until stopped or failed."""

    def __init__(self, outbox: PostgresOutbox, fake: FakeFragment, timeout: float = 10.0) -> None:
        self.outbox = outbox
        self.fake = fake
        self.timeout = timeout
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> _Bridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        wait_until(lambda: self._loop is not None, message="the delivery loop to start")
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self.join()

    def join(self) -> BaseException | None:
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "delivery did not stop"
        return self.error

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        config = FragmentConfig(
            kind="fragment", base_url=self.fake.url, token=SecretStr(TOKEN), batch_size=1
        )
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            box = LoopOutbox(self.outbox)  # delivery's outbox thread (closes it at the end)
            delivery = Delivery(
                box,
                {"fragment": FragmentTarget("fragment", config, TargetDeps.of(client))},
                RetryPolicy(),
                concurrency=4,
                rate_limits={},
                logger=logging.getLogger("test"),
                metrics=Metrics(),
                shutdown_grace=60.0,
                chains=ChainRenderer(),
            )
            try:
                await delivery.run(self._stop)
            except Exception as exc:
                self.error = exc
            finally:
                await box.aclose()


def _cut(dsn: str) -> None:
    """End every outbox session (as the chaos campaign does)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (APPLICATION_NAME,),
        )


def _sent(fake: FakeFragment) -> list[int]:
    """The `n` of each op the fake applied, in the order it applied them."""
    return [r["body"]["n"] for r in fake.ledger() if r["method"] == "PUT" and r["applied"]]


def _take_over(url: str, hold: float = 0.0) -> PostgresOutbox:
    """Another bridge's outbox, once it has reclaimed what the cut-off one had in flight."""
    outbox = PostgresOutbox(url, takeover_hold=hold)
    wait_until(lambda: outbox.reclaim_orphans(), timeout=30, message="the ops reclaimed")
    return outbox


def _deliver(outbox: PostgresOutbox, fake: FakeFragment, ops: int) -> None:
    """Run a bridge on `outbox` until `ops` are delivered (watched through an outbox of the
    test's own: an outbox instance belongs to one thread)."""
    bridge = _Bridge(outbox, fake).start()
    watch = PostgresOutbox(f"{outbox.dsn}?schema={outbox.schema}")
    try:
        wait_until(
            lambda: bridge.stopped or watch.counts()["delivered"] >= ops,
            timeout=60,
            message=f"{ops} ops delivered",
        )
    finally:
        watch.close()
        bridge.stop()
    assert bridge.error is None, bridge.error


def test_an_op_whose_claim_was_rolled_back_is_never_sent(pg_dsn: str, fake: FakeFragment) -> None:
    url = f"{pg_dsn}?schema={SCHEMA}"
    a = PostgresOutbox(url)
    try:
        a.put([make_op(n, uid="t-1") for n in range(3)], "test", None, time.time())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(CUT_AT_COMMIT)
        error = _Bridge(a, fake).start().join()
    finally:
        a.close()
    assert isinstance(error, OutboxUnavailable), error
    assert _sent(fake) == [0], "op 1 was sent though its claim was rolled back"

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER cut_at_commit ON {SCHEMA}.ops")
    b = _take_over(url)
    try:
        _deliver(b, fake, 3)
    finally:
        b.close()
    assert _sent(fake) == [0, 0, 1, 2], "the task's ops in source order"


def test_a_bridge_cut_off_from_its_outbox_stops_sending_at_once(
    pg_dsn: str, fake: FakeFragment
) -> None:
    """Its request in flight is given up (not waited for during the shutdown grace)."""
    url = f"{pg_dsn}?schema={SCHEMA}"
    fake.add_fault({"latency_ms": 20_000, "times": 1})
    a = PostgresOutbox(url)
    try:
        a.put([make_op(0, uid="t-1")], "test", None, time.time())
        bridge = _Bridge(a, fake, timeout=60.0).start()
        wait_until(lambda: fake.inflight == 1, message="the request at the API")
        _cut(pg_dsn)
        error = bridge.join()
        assert fake.inflight == 1, "the bridge waited for a request it could not record"
    finally:
        a.close()
    assert isinstance(error, OutboxUnavailable), error


def test_a_taken_over_op_waits_out_the_cut_off_bridges_request(
    pg_dsn: str, fake: FakeFragment
) -> None:
    """A's request for op 0 is slow at the API when A's outbox connection is cut; B takes the
    op over. B sends op 0 and op 1 only once A's request is done: else A's op 0 would land
    after them and undo op 1."""
    url = f"{pg_dsn}?schema={SCHEMA}"
    fake.add_fault({"latency_ms": 1000, "times": 1})
    a = PostgresOutbox(url)
    try:
        a.put([make_op(n, uid="t-1") for n in range(2)], "test", None, time.time())
        bridge = _Bridge(a, fake, timeout=2.0).start()
        wait_until(lambda: fake.inflight == 1, message="A's request at the API")
        _cut(pg_dsn)
        b = _take_over(url, hold=3.0)  # A's timeout and a margin
        try:
            _deliver(b, fake, 2)
        finally:
            b.close()
        assert isinstance(bridge.join(), OutboxUnavailable)
    finally:
        a.close()
    assert _sent(fake) == [0, 0, 1], "the task's ops in source order"
