"""`bridge fake-api`: every fake task API on one port, until interrupted."""

from __future__ import annotations

from bridge.fakes.base import FakeApi, serve
from bridge.fakes.fragment import FakeFragment


def build_fakes(token: str) -> list[FakeApi]:
    return [FakeFragment(token=token)]


def serve_fakes(port: int, host: str = "127.0.0.1", token: str = "test-token") -> None:
    fakes = build_fakes(token)
    server = serve(fakes, host, port)
    bound = server.server_address[1]
    for fake in fakes:
        print(
            f"{type(fake).__name__}: http://{host}:{bound}{fake.prefix}"
            f"  (admin: {fake.prefix}/_admin/ledger|tasks|faults|reset)",
            flush=True,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
