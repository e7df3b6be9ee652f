"""No secret at rest or on screen (G8): an API whose error replies echo the request headers
(the `Authorization` token among them) leaves the token nowhere the bridge writes."""

from __future__ import annotations

from tests.integration.conftest import TOKEN, BridgeEnv
from tests.support.wait import wait_until


def test_a_token_echoed_in_error_replies_is_stored_and_printed_masked(
    bridge_env: BridgeEnv,
) -> None:
    """A 503 then a 400 that echo the request headers: the op retries, then goes dead with
    the replies in its errors, but the token is in no log line, not in `outbox list`, `outbox
    show`, `status`, nor anywhere in the outbox file; the echo itself is kept, masked."""
    env = bridge_env
    env.fake.add_fault({"status": 503, "echo_headers": True, "times": 1})
    env.fake.add_fault({"status": 400, "echo_headers": True, "times": 1})
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    env.sql("INSERT INTO orders (id, status, created_at) VALUES (1, 'paid', now())")
    wait_until(lambda: env.outbox_count("status = 'dead'") == 1, message="the op dead")
    bridge.terminate()
    dead = env.outbox_rows("status = 'dead'")[0]
    assert '"authorization": "***"' in dead["last_error"], dead["last_error"]
    outputs = {
        "log": bridge.log_text(),
        "outbox list": bridge.run_cli("outbox", "list").stdout,
        "outbox show": bridge.run_cli("outbox", "show", dead["op_id"]).stdout,
        "status": bridge.run_cli("status").stdout,
        "outbox file": (env.workdir / "outbox.db").read_bytes().decode("latin-1"),
    }
    assert dead["op_id"] in outputs["outbox list"] and dead["op_id"] in outputs["outbox show"]
    assert "injected fault" in outputs["outbox show"]
    for where, text in outputs.items():
        assert TOKEN not in text, f"the token is in {where}"
    retried = bridge.events("op.retry")
    assert retried and '"authorization": "***"' in retried[0]["error"]


def test_credentials_over_plain_http_to_another_host_draw_a_warning(
    bridge_env: BridgeEnv,
) -> None:
    """A target with a token and an `http://` base URL on a non-loopback host is warned about
    at start (never contacted here: no rule uses it); loopback `http://` (the fake) is not."""
    env = bridge_env
    env.write_config(
        extra_targets="""
        tickets:
          kind: http
          base_url: http://tickets.example.com/api
          token: plain-http-token
          ops: {create: {path: /t}}
        """
    )
    bridge = env.bridge().start()
    bridge.wait_for_log("source.started")
    bridge.terminate()
    warned = bridge.events("target.insecure")
    assert [w["target"] for w in warned] == ["tickets"], warned
    assert warned[0]["level"] == "warning" and "https://" in warned[0]["reason"]
    assert "plain-http-token" not in bridge.log_text()
