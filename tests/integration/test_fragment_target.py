"""The Fragment target against the fake Fragment API: calls, headers and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from task_bridge.errors import PermanentDeliveryError, RetryAfter, TransientDeliveryError
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.targets.base import Call, TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget, fragment_task_uuid
from task_bridge.targets.http import parse_retry_after
from task_bridge.testing.postgres import free_port

TOKEN = "very-secret-token"


def _op(op: str, uid: str = "order-1", payload: dict[str, Any] | None = None) -> Call:
    return Call("id", "fragment", op, uid, payload or {}, 1)


def _send(url: str, op: Call, timeout: float | None = None) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            config = FragmentConfig(
                kind="fragment", base_url=url, token=SecretStr(TOKEN), timeout=timeout
            )
            return await FragmentTarget("fragment", config, TargetDeps.of(client)).send(op)

    return asyncio.run(go())


@pytest.fixture
def fake() -> Iterator[FakeFragment]:
    with FakeFragment(token=TOKEN) as server:
        yield server


def test_each_op_uses_the_documented_call(fake: FakeFragment) -> None:
    """upsert -> PUT /tasks/{md5 uuid}, update -> PATCH, close -> PATCH {status: DONE}."""
    uuid = fragment_task_uuid("order-1")
    assert _send(fake.url, _op("upsert", payload={"fields": {"title": "t"}})).remote_id == uuid
    _send(fake.url, _op("update", payload={"fields": {"note": "n"}}))
    _send(fake.url, _op("close"))
    ledger = fake.ledger()
    assert [(e["method"], e["path"]) for e in ledger] == [
        ("PUT", f"/tasks/{uuid}"),
        ("PATCH", f"/tasks/{uuid}"),
        ("PATCH", f"/tasks/{uuid}"),
    ]
    assert ledger[2]["body"] == {"status": "DONE"}
    assert fake.tasks()[uuid]["fields"] == {"title": "t", "note": "n"}
    assert fake.tasks()[uuid]["status"] == "DONE"
    assert all(e["headers"]["content-type"] == "application/json" for e in ledger)
    assert fragment_task_uuid(uuid) == uuid, "a UUID uid is used as is"


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ({"status": 400, "body": {"detail": "bad"}}, PermanentDeliveryError, 400),
        ({"status": 422}, PermanentDeliveryError, 422),
        ({"status": 429}, TransientDeliveryError, 429),
        ({"status": 429, "retry_after": "3"}, RetryAfter, 429),
        ({"status": 503, "retry_after": "1"}, RetryAfter, 503),
        ({"status": 500}, TransientDeliveryError, 500),
        ({"status": 409}, TransientDeliveryError, 409),
        ({"drop_after_apply": True}, TransientDeliveryError, None),
    ],
)
def test_errors_map_to_transient_or_permanent(
    fake: FakeFragment, fault: dict[str, Any], error: type[Exception], status: int | None
) -> None:
    """Status codes and dropped connections become the right delivery error, token-free."""
    fake.add_fault(fault)
    with pytest.raises(error) as caught:
        _send(fake.url, _op("upsert"))
    assert type(caught.value) is error
    assert getattr(caught.value, "http_status", None) == status
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    if isinstance(caught.value, RetryAfter):
        assert caught.value.seconds == float(fault["retry_after"])


def test_timeout_and_refused_connection_are_transient(fake: FakeFragment) -> None:
    """A read timeout and a closed port are transient errors."""
    fake.add_fault({"latency_ms": 500, "times": 1})
    with pytest.raises(TransientDeliveryError, match="timed out"):
        _send(fake.url, _op("upsert"), timeout=0.1)
    with pytest.raises(TransientDeliveryError):
        _send(f"http://127.0.0.1:{free_port()}/api/v1", _op("upsert"))


def test_wrong_token_is_permanent_401(fake: FakeFragment) -> None:
    """The fake checks the bearer token; a 401 is permanent."""
    fake.token = "other"
    with pytest.raises(PermanentDeliveryError) as caught:
        _send(fake.url, _op("upsert"))
    assert caught.value.http_status == 401


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date gives the seconds until then."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
