"""The fake Fragment API as a real HTTP server, and the Fragment target's calls against it."""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from task_bridge.errors import PermanentDeliveryError, RetryAfter, TransientDeliveryError
from task_bridge.events import UNCHANGED
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.targets.base import Call, Delivered, TargetDeps
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget, fragment_task_uuid
from task_bridge.testing.postgres import free_port

TOKEN = "tok-do-not-leak-42"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake() -> Iterator[FakeFragment]:
    with FakeFragment(token=TOKEN) as server:
        yield server


def _op(op: str, uid: str = "order-1", payload: dict[str, Any] | None = None) -> Call:
    return Call("op-id", "fragment", op, uid, payload if payload is not None else {}, 1)


def _send(fake: FakeFragment | str, *ops: Call, **config: Any) -> list[Delivered]:
    """Send ops in order through one FragmentTarget (base URL: the fake's or the one given)."""
    base_url = fake if isinstance(fake, str) else fake.url

    async def go() -> list[Delivered]:
        async with httpx.AsyncClient() as client:
            cfg = FragmentConfig(
                kind="fragment", base_url=base_url, token=SecretStr(TOKEN), **config
            )
            target = FragmentTarget("fragment", cfg, TargetDeps.of(client))
            try:
                return [await target.send(op) for op in ops]
            finally:
                await target.aclose()

    return asyncio.run(go())


# -- the target's requests, as the fake saw them -------------------------------------------------


def test_upsert_puts_the_encoded_payload_with_documented_headers(fake: FakeFragment) -> None:
    """create/upsert -> PUT /tasks/{uuid}, bearer token, User-Agent, exactly encoded JSON."""
    payload = {
        "fields": {
            "title": "Review",
            "amount": Decimal("12.50"),
            "ref": uuid.UUID(int=7),
        },
        "due_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    delivered = _send(fake, _op("upsert", payload=payload), _op("create", uid="order-2"))
    uuid1, uuid2 = fragment_task_uuid("order-1"), fragment_task_uuid("order-2")
    assert [d.remote_id for d in delivered] == [uuid1, uuid2]
    assert [d.http_status for d in delivered] == [200, 200]
    first, second = fake.ledger()
    assert (first["method"], first["path"], first["status"]) == ("PUT", f"/tasks/{uuid1}", 200)
    assert (second["method"], second["path"]) == ("PUT", f"/tasks/{uuid2}")
    assert first["body"] == {
        "fields": {
            "title": "Review",
            "amount": "12.50",
            "ref": "00000000-0000-0000-0000-000000000007",
        },
        "due_at": "2026-01-02T03:04:05+00:00",
    }
    headers = first["headers"]
    assert headers["authorization"] == "Bearer ***"  # the fake checked the real one: 200
    assert headers["user-agent"].startswith("task-bridge/")
    assert headers["content-type"] == "application/json"
    assert fake.tasks()[uuid1]["due_at"] == "2026-01-02T03:04:05+00:00"


def test_configured_user_agent_is_sent(fake: FakeFragment) -> None:
    """A `user_agent` in the target config replaces the default one."""
    _send(fake, _op("upsert"), user_agent="acme/1.0")
    assert fake.ledger()[0]["headers"]["user-agent"] == "acme/1.0"


def test_update_patches_and_close_merges_done_into_the_payload(fake: FakeFragment) -> None:
    """update -> PATCH with the payload; close -> PATCH with the payload and status DONE."""
    task_uuid = fragment_task_uuid("order-1")
    _send(
        fake,
        _op("upsert", payload={"fields": {"title": "t"}}),
        _op("update", payload={"fields": {"note": "n"}, "status": "STARTED"}),
        _op("close", payload={"fields": {"closed_by": "bridge"}, "status": "TODO"}),
    )
    _, update, close = fake.ledger()
    assert (update["method"], update["path"]) == ("PATCH", f"/tasks/{task_uuid}")
    assert update["body"] == {"fields": {"note": "n"}, "status": "STARTED"}
    assert (close["method"], close["path"]) == ("PATCH", f"/tasks/{task_uuid}")
    assert close["body"] == {"fields": {"closed_by": "bridge"}, "status": "DONE"}
    task = fake.tasks()[task_uuid]
    assert task["status"] == "DONE"
    assert task["fields"] == {"title": "t", "note": "n", "closed_by": "bridge"}


def test_a_uuid_uid_is_used_as_the_task_uuid(fake: FakeFragment) -> None:
    """A uid that is a UUID appears unchanged in the request path and as remote_id."""
    uid = str(uuid.uuid4())
    (delivered,) = _send(fake, _op("upsert", uid=uid))
    assert delivered.remote_id == uid
    assert fake.ledger()[0]["path"] == f"/tasks/{uid}"


def test_update_of_a_missing_task_is_permanent(fake: FakeFragment) -> None:
    """PATCH of a task the API does not know answers 404, a permanent failure."""
    with pytest.raises(PermanentDeliveryError) as caught:
        _send(fake, _op("update", uid="never-created"))
    assert caught.value.http_status == 404 and "404" in str(caught.value)


def test_unencodable_payload_is_permanent_and_sends_nothing(fake: FakeFragment) -> None:
    """An UNCHANGED (TOASTed) value cannot be sent: permanent error, no request made."""
    with pytest.raises(PermanentDeliveryError, match="UNCHANGED"):
        _send(fake, _op("upsert", payload={"fields": {"big": UNCHANGED}}))
    assert fake.ledger() == []


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_permanent_and_token_free(fake: FakeFragment, status: int) -> None:
    """401/403 are permanent; neither the message nor the repr contains the token."""
    if status == 401:
        fake.token = "rotated"
    else:
        fake.add_fault({"status": 403, "body": {"detail": "forbidden"}})
    with pytest.raises(PermanentDeliveryError) as caught:
        _send(fake, _op("upsert"))
    assert caught.value.http_status == status and str(status) in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


def test_retry_after_as_http_date_from_the_server(fake: FakeFragment) -> None:
    """A 503 with an HTTP-date Retry-After becomes RetryAfter with the seconds left."""
    fake.add_fault(
        {"status": 503, "retry_after": email.utils.formatdate(time.time() + 30, usegmt=True)}
    )
    with pytest.raises(RetryAfter) as caught:
        _send(fake, _op("upsert"))
    assert 25 <= caught.value.seconds <= 31 and caught.value.http_status == 503


def test_rate_limited_429_without_retry_after_is_transient() -> None:
    """Past the fake's per-minute limit a 429 comes back, mapped to a transient error."""
    with FakeFragment(token=TOKEN, rate_limit_per_min=2) as fake:
        _send(fake, _op("upsert", uid="a"), _op("upsert", uid="b"))
        with pytest.raises(TransientDeliveryError) as caught:
            _send(fake, _op("upsert", uid="c"))
        assert type(caught.value) is TransientDeliveryError
        assert caught.value.http_status == 429
        assert fake.rate_limited == 1
        assert fragment_task_uuid("c") not in fake.tasks()


def test_dropped_after_apply_is_transient_yet_applied_and_safe_to_retry(
    fake: FakeFragment,
) -> None:
    """The fake applies the PUT then hangs up: transient error, and the retry makes no duplicate."""
    fake.add_fault({"method": "PUT", "drop_after_apply": True, "times": 1})
    with pytest.raises(TransientDeliveryError) as caught:
        _send(fake, _op("upsert", payload={"fields": {"title": "t"}}))
    assert TOKEN not in str(caught.value)
    task_uuid = fragment_task_uuid("order-1")
    assert fake.tasks()[task_uuid]["fields"] == {"title": "t"}
    entry = fake.ledger()[0]
    assert entry["applied"] is True and entry["dropped"] is True and entry["status"] is None
    _send(fake, _op("upsert", payload={"fields": {"title": "t"}}))
    assert list(fake.tasks()) == [task_uuid]


def test_dropped_before_apply_is_transient_and_not_applied(fake: FakeFragment) -> None:
    """The fake hangs up without applying: transient error, no task."""
    fake.add_fault({"drop_before_apply": True, "times": 1})
    with pytest.raises(TransientDeliveryError):
        _send(fake, _op("upsert"))
    assert fake.tasks() == {}
    assert fake.ledger()[0]["applied"] is False


def test_read_timeout_and_refused_connection(fake: FakeFragment) -> None:
    """A response slower than the target timeout, and a closed port, are transient errors."""
    fake.add_fault({"latency_ms": 400, "times": 1})
    with pytest.raises(TransientDeliveryError, match="timed out"):
        _send(fake, _op("upsert"), timeout="100ms")
    with pytest.raises(TransientDeliveryError, match="ConnectError"):
        _send(f"http://127.0.0.1:{free_port()}/api/v1", _op("upsert"))


# -- the fake itself -------------------------------------------------------------------------


def test_fake_requires_the_bearer_token(fake: FakeFragment) -> None:
    """Missing or wrong bearer tokens get 401 and change nothing; the right one is applied."""
    url = f"{fake.url}/tasks/{uuid.uuid4()}"
    assert httpx.put(url, json={"fields": {}}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.put(url, json={"fields": {}}, headers=wrong).status_code == 401
    assert httpx.put(url, json={"fields": {}}, headers={"Authorization": TOKEN}).status_code == 401
    assert httpx.put(url, json={"fields": {}}, headers=AUTH).status_code == 200
    assert [(e["status"], e["applied"]) for e in fake.ledger()] == [
        (401, False),
        (401, False),
        (401, False),
        (200, True),
    ]
    assert len(fake.tasks()) == 1


def test_ledger_records_every_request_with_the_token_masked(fake: FakeFragment) -> None:
    """Each request is recorded in order with time, method, path, uid, body, status; no token."""
    uid = str(uuid.uuid4())
    before = time.time()
    httpx.put(f"{fake.url}/tasks/{uid}", json={"fields": {"a": 1}}, headers=AUTH)
    httpx.get(f"{fake.url}/tasks/{uid}", headers=AUTH)
    after = time.time()
    ledger = fake.ledger()
    assert [e["seq"] for e in ledger] == [0, 1]
    assert all(before <= e["t"] <= after for e in ledger)
    put = ledger[0]
    assert (put["method"], put["path"], put["uid"]) == ("PUT", f"/tasks/{uid}", uid)
    assert put["body"] == {"fields": {"a": 1}} and put["status"] == 200 and put["applied"]
    assert ledger[1]["applied"] is False
    assert put["headers"]["authorization"] == "Bearer ***"
    assert TOKEN not in json.dumps(ledger)
    assert TOKEN not in httpx.get(f"{fake.url}/_admin/ledger").text
    ledger[0]["status"] = 999  # a copy: the fake's ledger is unchanged
    assert fake.ledger()[0]["status"] == 200


def test_put_creates_and_replaces_patch_merges(fake: FakeFragment) -> None:
    """PUT creates (TODO, timestamps) or replaces given keys; PATCH merges fields; GET reads."""
    uid = str(uuid.uuid4())
    url = f"{fake.url}/tasks/{uid}"
    created = httpx.put(url, json={"fields": {"a": 1, "b": 2}, "queue_uid": "q"}, headers=AUTH)
    assert created.status_code == 200
    task = created.json()
    assert task["uid"] == uid and task["status"] == "TODO" and task["due_at"] is None
    assert task["created_at"] and task["updated_at"] and task["queue_uid"] == "q"
    replaced = httpx.put(url, json={"fields": {"c": 3}}, headers=AUTH).json()
    assert replaced["fields"] == {"c": 3} and replaced["created_at"] == task["created_at"]
    assert replaced["queue_uid"] == "q"
    patched = httpx.patch(url, json={"fields": {"d": 4}, "status": "STARTED"}, headers=AUTH)
    assert patched.json()["fields"] == {"c": 3, "d": 4} and patched.json()["status"] == "STARTED"
    assert httpx.get(url, headers=AUTH).json() == fake.tasks()[uid] == patched.json()
    tasks = fake.tasks()
    tasks[uid]["fields"]["e"] = 5  # a deep copy: the store is unchanged
    assert "e" not in fake.tasks()[uid]["fields"]


def test_invalid_requests_are_rejected(fake: FakeFragment) -> None:
    """Non-UUID uid -> 422, unknown status -> 422, PATCH or GET of a missing task -> 404."""
    assert httpx.put(f"{fake.url}/tasks/order-1", json={}, headers=AUTH).status_code == 422
    url = f"{fake.url}/tasks/{uuid.uuid4()}"
    assert httpx.put(url, json={"status": "CLOSED"}, headers=AUTH).status_code == 422
    assert httpx.put(url, json={"fields": "x"}, headers=AUTH).status_code == 422
    assert httpx.patch(url, json={"status": "DONE"}, headers=AUTH).status_code == 404
    assert httpx.get(url, headers=AUTH).status_code == 404
    assert fake.tasks() == {}
    assert not any(e["applied"] for e in fake.ledger())


def test_list_tasks_with_cursor_pagination(fake: FakeFragment) -> None:
    """GET /tasks returns items and meta (limit, cursors, total_count) page by page."""
    uids = [str(uuid.uuid4()) for _ in range(5)]
    for uid in uids:
        httpx.put(f"{fake.url}/tasks/{uid}", json={"fields": {}}, headers=AUTH)
    seen: list[str] = []
    cursor: str | None = "0"
    while cursor is not None:
        page = httpx.get(
            f"{fake.url}/tasks", params={"limit": 2, "cursor": cursor}, headers=AUTH
        ).json()
        assert page["meta"]["total_count"] == 5 and page["meta"]["limit"] == 2
        seen += [item["uid"] for item in page["items"]]
        cursor = page["meta"]["next_cursor"]
    assert seen == uids
    everything = httpx.get(f"{fake.url}/tasks", headers=AUTH).json()
    assert len(everything["items"]) == 5 and everything["meta"]["next_cursor"] is None


def test_batch_upserts_each_item(fake: FakeFragment) -> None:
    """PUT /tasks/batch upserts every item with a UUID uid and reports the others."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    httpx.put(f"{fake.url}/tasks/{a}", json={"fields": {"old": 1}}, headers=AUTH)
    items = [
        {"uid": a, "fields": {"new": 2}},
        {"uid": b, "fields": {"title": "b"}, "status": "STARTED"},
        {"uid": "not-a-uuid", "fields": {}},
    ]
    response = httpx.put(f"{fake.url}/tasks/batch", json={"items": items}, headers=AUTH)
    assert response.status_code == 200
    results = response.json()["items"]
    assert [r.get("uid") for r in results[:2]] == [a, b]
    assert results[2]["status"] == 422
    tasks = fake.tasks()
    assert tasks[a]["fields"] == {"new": 2}
    assert tasks[b]["status"] == "STARTED" and tasks[b]["fields"] == {"title": "b"}
    assert len(tasks) == 2
    bad = httpx.put(f"{fake.url}/tasks/batch", json=[1], headers=AUTH)
    assert bad.status_code == 422


def test_faults_match_in_order_by_method_and_path_and_expire(fake: FakeFragment) -> None:
    """A fault applies only to matching requests, the first match wins, `times` runs out."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    fake.add_fault({"method": "PATCH", "status": 500})
    fake.add_fault({"path_regex": f"/tasks/{a}$", "status": 502, "times": 2})
    fake.add_fault({"path_regex": "/tasks/", "status": 409, "times": 1, "body": {"x": 1}})
    statuses = [
        httpx.put(f"{fake.url}/tasks/{uid}", json={}, headers=AUTH).status_code
        for uid in (a, a, b, a, b)
    ]
    assert statuses == [502, 502, 409, 200, 200]
    assert httpx.patch(f"{fake.url}/tasks/{a}", json={}, headers=AUTH).status_code == 500
    assert [e["applied"] for e in fake.ledger()] == [False, False, False, True, True, False]
    fake.clear_faults()
    assert httpx.patch(f"{fake.url}/tasks/{a}", json={}, headers=AUTH).status_code == 200


def test_latency_fault_delays_the_answer(fake: FakeFragment) -> None:
    """`latency_ms` holds the response back at least that long, then answers normally."""
    fake.add_fault({"latency_ms": 300, "times": 1})
    url = f"{fake.url}/tasks/{uuid.uuid4()}"
    started = time.monotonic()
    assert httpx.put(url, json={}, headers=AUTH).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert httpx.put(url, json={}, headers=AUTH).status_code == 200
    assert [e["delayed_ms"] for e in fake.ledger()] == [300, 0]  # `times: 1`: once only


def test_admin_endpoints_over_http(fake: FakeFragment) -> None:
    """Faults, ledger, tasks and reset are reachable over HTTP without the token."""
    admin = f"{fake.url}/_admin"
    faults = [{"method": "PUT", "status": 429, "retry_after": 5, "times": 1}, {"latency_ms": 1}]
    assert httpx.post(f"{admin}/faults", json=faults).status_code == 204
    url = f"{fake.url}/tasks/{uuid.uuid4()}"
    limited = httpx.put(url, json={}, headers=AUTH)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "5"
    assert httpx.put(url, json={}, headers=AUTH).status_code == 200
    assert httpx.delete(f"{admin}/faults").status_code == 204
    assert [e["status"] for e in httpx.get(f"{admin}/ledger").json()] == [429, 200]
    assert list(httpx.get(f"{admin}/tasks").json()) == list(fake.tasks())
    unknown = httpx.post(f"{admin}/faults", json={"stauts": 500})
    assert unknown.status_code == 400 and "stauts" in unknown.text
    assert httpx.post(f"{admin}/reset").status_code == 204
    assert fake.ledger() == [] and fake.tasks() == {}
    assert httpx.get(f"{admin}/ledger").json() == []


def test_keep_alive_and_content_length(fake: FakeFragment) -> None:
    """Several requests share one HTTP/1.1 connection; every answer has Content-Length."""
    port = fake.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        requests = [
            ("PUT", f"/api/v1/tasks/{uuid.uuid4()}", b"{}", AUTH),
            ("POST", "/api/v1/_admin/reset", b"", {}),
            ("GET", "/api/v1/tasks/order-1", b"", {}),
        ]
        sockets = []
        for method, path, body, headers in requests:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.version == 11 and response.getheader("Content-Length") is not None
            sockets.append(conn.sock)
        assert sockets[0] is not None and all(s is sockets[0] for s in sockets)
    finally:
        conn.close()


def test_concurrent_requests_are_all_recorded(fake: FakeFragment) -> None:
    """Concurrent requests are each applied and recorded once with distinct sequence numbers."""
    uids = [str(uuid.uuid4()) for _ in range(40)]

    async def go() -> list[int]:
        async with httpx.AsyncClient(headers=AUTH) as client:
            responses = await asyncio.gather(
                *(client.put(f"{fake.url}/tasks/{uid}", json={"fields": {}}) for uid in uids)
            )
        return [r.status_code for r in responses]

    assert asyncio.run(go()) == [200] * 40
    ledger = fake.ledger()
    assert sorted(e["seq"] for e in ledger) == list(range(40))
    assert sorted(fake.tasks()) == sorted(uids)
    assert fake.inflight == 0


def test_serve_fakes_runs_until_interrupted() -> None:
    """`serve_fakes` prints the Fragment URL, serves it, and exits cleanly on Ctrl-C."""
    port = free_port()
    code = f"from task_bridge.fakes.server import serve_fakes; serve_fakes({port}, token='t0k')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/api/v1" in line
        url = f"http://127.0.0.1:{port}/api/v1/tasks/{uuid.uuid4()}"
        assert httpx.put(url, json={}, headers={"Authorization": "Bearer t0k"}).status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_request_cut_short_of_its_content_length_is_never_applied(fake: FakeFragment) -> None:
    """A client that dies mid-send (body shorter than its Content-Length, then EOF): nothing
    is applied, nothing recorded, no answer; the next request is served."""
    task = uuid.uuid4()
    body = json.dumps({"fields": {"title": "half"}}).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as conn:
        conn.sendall(
            f"PUT /tasks/{task} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1024) == b""  # closed without an answer
    assert fake.tasks() == {} and fake.ledger() == []
    assert httpx.put(f"{fake.url}/tasks/{task}", json={}, headers=AUTH).status_code == 200
