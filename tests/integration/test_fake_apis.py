"""`bridge fake-api`: every fake task API on one port, each checking its own auth scheme, with
its admin endpoints and the shared ledger and faults."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from task_bridge.fakes.base import serve
from task_bridge.fakes.server import build_fakes

TOKEN = "fake-token"


@pytest.fixture
def base_url() -> Iterator[str]:
    server = serve(build_fakes(TOKEN), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_every_fake_answers_on_one_port_with_its_own_auth(base_url: str) -> None:
    """Fragment and the workflow API take Bearer, Human Lambdas Token, Copilotz a token from
    its login; each refuses a request without them."""
    with httpx.Client(base_url=base_url) as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/api/v1/tasks", headers=bearer).status_code == 200
        assert http.get("/api/v1/tasks").status_code == 401
        hl = "/humanlambdas/orgs/o/queues/q/tasks"
        assert (
            http.get(f"{hl}/completed", headers={"Authorization": f"Token {TOKEN}"}).json()["count"]
            == 0
        )
        assert http.get(f"{hl}/completed", headers=bearer).status_code == 401
        bad = http.post("/copilotz/api/auth/login", json={"username": "bridge"})
        assert bad.status_code == 401 and "message" in bad.json()["error"]
        login = http.post(
            "/copilotz/api/auth/login",
            json={"username": "bridge", "password": TOKEN, "namespace": "acme"},
        ).json()
        cz = {"Authorization": f"Bearer {login['accessToken']}"}
        assert http.get("/copilotz/rest/tasks", headers=cz).json() == {"data": []}
        http.post("/copilotz/_admin/expire_tokens")
        assert http.get("/copilotz/rest/tasks", headers=cz).status_code == 401
        search = http.post("/epilot/v1/entity:search", json={"q": "_id:x"}, headers=bearer)
        assert search.json() == {"hits": 0, "results": []}
        assert http.post("/generic/tasks", json={"a": 1}).status_code == 401


def test_human_lambdas_completed_tasks_page_newest_first(base_url: str) -> None:
    """Completed tasks come newest first, in offset/limit pages with next/previous links;
    an empty create is refused like the real API."""
    auth = {"Authorization": f"Token {TOKEN}"}
    hl = "/humanlambdas/orgs/o/queues/q/tasks"
    with httpx.Client(base_url=base_url, headers=auth) as http:
        assert http.post(f"{hl}/create", json={"data": {}}).status_code == 400
        ids = [http.post(f"{hl}/create", json={"data": {"n": n}}).json()["id"] for n in range(5)]
        for task_id in ids[:4]:
            http.post("/humanlambdas/_admin/complete", json={"id": task_id, "data": {"ok": 1}})
        first = http.get(f"{hl}/completed", params={"offset": 0, "limit": 3}).json()
        assert [t["id"] for t in first["tasks"]] == [ids[3], ids[2], ids[1]]
        assert first["count"] == 4 and first["previous"] is None and "offset=3" in first["next"]
        second = http.get(f"{hl}/completed", params={"offset": 3, "limit": 3}).json()
        assert [t["id"] for t in second["tasks"]] == [ids[0]] and second["next"] is None
        assert second["tasks"][0]["data"] == {"n": 0, "ok": 1}


def test_workflow_automation_follows_its_script_and_faults_apply(base_url: str) -> None:
    """An automation execution moves along its flow's script one GET at a time, the last
    status sticking; an injected 429 with Retry-After is answered before the route."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base_url, headers=bearer) as http:
        http.post("/epilot/_admin/script", json={"flow_id": "f", "statuses": ["paused", "hot"]})
        started = http.post(
            "/epilot/v1/automation/executions", json={"entity_id": "e", "flow_id": "f"}
        )
        assert started.status_code == 201 and started.json()["execution_status"] == "pending"
        url = f"/epilot/v1/automation/executions/{started.json()['id']}"
        statuses = [http.get(url).json()["execution_status"] for _ in range(3)]
        assert statuses == ["paused", "hot", "hot"]
        http.post("/epilot/_admin/faults", json={"status": 429, "retry_after": "2", "times": 1})
        limited = http.get(url)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        assert http.get(url).status_code == 200


def test_generic_api_honours_idempotency_keys(base_url: str) -> None:
    """Two creates with the same Idempotency-Key create one task and answer the same body."""
    bearer = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"}
    with httpx.Client(base_url=base_url, headers=bearer) as http:
        one = http.post("/generic/tasks", json={"title": "a"}).json()
        two = http.post("/generic/tasks", json={"title": "a"}).json()
        assert one == two
        assert http.post(f"/generic/tasks/{one['id']}/close").json()["status"] == "closed"
        assert len(http.get("/generic/_admin/tasks").json()) == 1
