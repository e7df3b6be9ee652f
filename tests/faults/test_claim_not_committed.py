"""G4 when the outbox is lost in the middle of a claim: an op whose claim was never committed
is not sent. (The chaos campaign's `[1, 2, 3, 4, 5, 4, 5, 6, 7]`: a bridge's connection was
cut while it committed a result together with the claim of the task's next op; it sent that
op anyway while draining, and the bridge after it re-sent both.)

The commit fails for real, in Postgres: a deferred constraint trigger on the outbox's `ops`
table ends the committing session when the second op of the task is claimed, so the claim's
transaction is rolled back and the client sees its connection lost, as under
`pg_terminate_backend`.
"""

from __future__ import annotations

import asyncio
import logging
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
from task_bridge.outbox.postgres import PostgresOutbox
from task_bridge.retry import RetryPolicy
from task_bridge.rules.chains import ChainRenderer
from task_bridge.targets.base import TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget
from tests.support.ops import make_op
from tests.support.wait import wait_until

TOKEN = "claim-token"
SCHEMA = "claim_outbox"

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


def _delivery(outbox: PostgresOutbox, fake: FakeFragment, client: httpx.AsyncClient) -> Delivery:
    config = FragmentConfig(
        kind="fragment", base_url=fake.url, token=SecretStr(TOKEN), batch_size=1
    )
    return Delivery(
        outbox,
        {"fragment": FragmentTarget("fragment", config, TargetDeps.of(client))},
        RetryPolicy(),
        concurrency=4,
        rate_limits={},
        logger=logging.getLogger("test"),
        metrics=Metrics(),
        shutdown_grace=10.0,
        chains=ChainRenderer(),
    )


async def _run_until_lost(outbox: PostgresOutbox, fake: FakeFragment) -> None:
    """Bridge A: delivers op 0; the commit of its result with the claim of op 1 fails."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(OutboxUnavailable):
            await asyncio.wait_for(_delivery(outbox, fake, client).run(asyncio.Event()), 60)


async def _run_until_delivered(outbox: PostgresOutbox, fake: FakeFragment, ops: int) -> None:
    """Bridge B: recovers A's inflight op and delivers the task's ops."""
    async with httpx.AsyncClient() as client:
        stop = asyncio.Event()
        run = asyncio.create_task(_delivery(outbox, fake, client).run(stop))
        deadline = time.monotonic() + 60
        while outbox.counts()["delivered"] < ops:
            assert time.monotonic() < deadline, outbox.counts()
            assert not run.done(), "delivery stopped by itself"
            await asyncio.sleep(0.01)
        stop.set()
        await run


def test_an_op_whose_claim_was_rolled_back_is_never_sent(pg_dsn: str, fake: FakeFragment) -> None:
    url = f"{pg_dsn}?schema={SCHEMA}"
    a = PostgresOutbox(url)
    try:
        a.put([make_op(n, uid="t-1") for n in range(3)], "test", None, time.time())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(CUT_AT_COMMIT)
        asyncio.run(_run_until_lost(a, fake))
    finally:
        a.close()
    sent = [r["body"]["n"] for r in fake.ledger() if r["method"] == "PUT"]
    assert sent == [0], f"bridge A sent {sent}: op 1 was never claimed (its claim rolled back)"

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TRIGGER cut_at_commit ON {SCHEMA}.ops")
    b = PostgresOutbox(url)
    try:
        wait_until(lambda: b.reset_inflight() or b.counts()["inflight"] == 0, timeout=30)
        asyncio.run(_run_until_delivered(b, fake, 3))
    finally:
        b.close()
    sent = [r["body"]["n"] for r in fake.ledger() if r["method"] == "PUT"]
    assert sent == sorted(sent), f"the task's ops out of source order: {sent}"
