"""HTTP plumbing shared by targets: status and transport error mapping, Retry-After, config."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import weakref
from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from task_bridge.errors import PermanentDeliveryError, RetryAfter, TransientDeliveryError
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.targets.http import (
    BODY_EXCERPT_CHARS,
    TargetConfigBase,
    check_response,
    parse_retry_after,
    request,
    user_agent,
)

URL = "http://127.0.0.1:9/api/v1/tasks/abc"


def _response(status: int, body: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers, request=httpx.Request("PUT", URL))


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_returned(status: int) -> None:
    """Any 2xx response comes back unchanged."""
    response = _response(status)
    assert check_response(response) is response


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status: int) -> None:
    """5xx, 408, 409, 425 and 429 without Retry-After are transient and carry the status."""
    with pytest.raises(TransientDeliveryError) as caught:
        check_response(_response(status, '{"detail": "busy"}'))
    assert type(caught.value) is TransientDeliveryError
    assert caught.value.http_status == status
    assert f"HTTP {status}" in str(caught.value) and "busy" in str(caught.value)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 422])
def test_permanent_statuses(status: int) -> None:
    """Other non-2xx statuses are permanent, naming status, method and path."""
    with pytest.raises(PermanentDeliveryError) as caught:
        check_response(_response(status, '{"detail": "nope"}'))
    assert caught.value.http_status == status
    assert str(caught.value) == f'HTTP {status} from PUT /api/v1/tasks/abc: {{"detail": "nope"}}'


def test_retry_after_on_transient_status_is_a_signal() -> None:
    """A transient status with Retry-After (seconds) becomes RetryAfter(seconds)."""
    for status in (429, 503, 500):
        with pytest.raises(RetryAfter) as caught:
            check_response(_response(status, headers={"Retry-After": "7"}))
        assert caught.value.seconds == 7.0 and caught.value.http_status == status


def test_retry_after_http_date_header() -> None:
    """Retry-After as an HTTP-date gives the seconds until that date."""
    when = email.utils.formatdate(timeval=None, usegmt=True)  # now, so the wait is ~0
    with pytest.raises(RetryAfter) as caught:
        check_response(_response(429, headers={"Retry-After": when}))
    assert 0.0 <= caught.value.seconds <= 1.0


def test_retry_after_is_ignored_on_permanent_and_garbage_values() -> None:
    """Retry-After does not make a 400 retryable; an unparsable one leaves a plain transient."""
    with pytest.raises(PermanentDeliveryError):
        check_response(_response(400, headers={"Retry-After": "5"}))
    with pytest.raises(TransientDeliveryError) as caught:
        check_response(_response(429, headers={"Retry-After": "later"}))
    assert not isinstance(caught.value, RetryAfter)


def test_parse_retry_after() -> None:
    """Seconds, fractional seconds, past dates (clamped to 0) and junk are handled."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("") is None and parse_retry_after(None) is None
    assert parse_retry_after("tomorrow") is None


def test_long_bodies_are_truncated() -> None:
    """The body excerpt in an error message is cut to about 300 characters."""
    with pytest.raises(PermanentDeliveryError) as caught:
        check_response(_response(400, "x" * 5000))
    message = str(caught.value)
    assert message.endswith("x" * BODY_EXCERPT_CHARS + "...")
    assert len(message) < BODY_EXCERPT_CHARS + 60


def _send_through(
    handler: Callable[[httpx.Request], httpx.Response] | None, url: str = URL
) -> None:
    """One `request` through a mock transport, or the real one when `handler` is None."""
    transport = httpx.MockTransport(handler) if handler else None

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await request(
                client, "PUT", url, content="{}", headers={"Authorization": "Bearer sekrit"}
            )

    asyncio.run(go())


@pytest.mark.parametrize(
    "exc_type",
    [httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError],
)
def test_transport_errors_are_transient(exc_type: type[httpx.TransportError]) -> None:
    """Connection-level failures become TransientDeliveryError chained to the httpx error."""

    def fail(req: httpx.Request) -> httpx.Response:
        raise exc_type("connection went away", request=req)

    with pytest.raises(TransientDeliveryError) as caught:
        _send_through(fail)
    assert isinstance(caught.value.__cause__, exc_type)
    assert caught.value.http_status is None
    assert "PUT /api/v1/tasks/abc" in str(caught.value) and "sekrit" not in str(caught.value)


@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_timeouts_are_transient(exc_type: type[httpx.TimeoutException]) -> None:
    """Every kind of timeout is a transient error saying it timed out."""

    def slow(req: httpx.Request) -> httpx.Response:
        raise exc_type("too slow", request=req)

    with pytest.raises(TransientDeliveryError, match="timed out"):
        _send_through(slow)


def test_bad_urls_are_permanent() -> None:
    """A URL without http(s) or with a broken port cannot succeed on retry: permanent."""
    with pytest.raises(PermanentDeliveryError, match="bad target URL"):
        _send_through(None, "api.example.com/tasks/1")
    with pytest.raises(PermanentDeliveryError, match="bad target URL"):
        _send_through(None, "http://[::1:x/tasks")


def test_status_errors_come_through_request() -> None:
    """`request` applies the status mapping to what the server answered."""
    with pytest.raises(RetryAfter) as caught:
        _send_through(lambda req: httpx.Response(429, headers={"Retry-After": "2"}))
    assert caught.value.seconds == 2.0


def test_responses_are_freed_without_the_cyclic_collector() -> None:
    """A response from `request` (and all httpx and httpcore built for it) is freed when the
    last reference goes, with the cyclic collector off: delivering leaves no garbage behind
    for collections that would pause the event loop."""

    async def go(url: str) -> tuple[weakref.ref[httpx.Response], bytes]:
        async with httpx.AsyncClient(headers={"Authorization": "Bearer t"}) as client:
            await request(client, "GET", url)  # warm: the pool's connection lives on
            response = await request(client, "GET", url)
            freed, body = weakref.ref(response), response.content
            del response
            return freed, body

    with FakeFragment(token="t") as fake:
        gc.disable()
        try:
            freed, body = asyncio.run(go(f"{fake.url}/tasks?limit=1"))
            assert freed() is None
        finally:
            gc.enable()
    assert body.startswith(b"{")


def test_user_agent_names_the_bridge() -> None:
    """The default User-Agent is task-bridge/<version>."""
    name, _, version = user_agent().partition("/")
    assert name == "task-bridge" and version


def test_target_config_base_types_and_unknown_keys() -> None:
    """Rates and durations parse to floats; unknown keys are rejected."""
    config = TargetConfigBase(kind="x", base_url="http://h", rate_limit="60/min", timeout="1500ms")
    assert config.rate_limit == 1.0 and config.timeout == 1.5
    with pytest.raises(ValidationError, match="base_ulr"):
        TargetConfigBase(kind="x", base_url="http://h", base_ulr="http://h")  # type: ignore[call-arg]
