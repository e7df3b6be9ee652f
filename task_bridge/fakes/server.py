"""`bridge fake-api`: every fake task API on one port, until interrupted."""

from __future__ import annotations

import signal

from task_bridge.fakes.base import FakeApi, serve
from task_bridge.fakes.copilotz import FakeCopilotz
from task_bridge.fakes.fragment import FakeFragment
from task_bridge.fakes.generic import FakeGeneric
from task_bridge.fakes.humanlambdas import FakeHumanLambdas
from task_bridge.fakes.workflow import FakeWorkflow


def build_fakes(token: str) -> list[FakeApi]:
    """Every fake; Copilotz logs in with username `bridge` and the token as password."""
    return [
        FakeFragment(token=token),
        FakeHumanLambdas(token=token),
        FakeCopilotz(password=token),
        FakeWorkflow(token=token),
        FakeGeneric(token=token),
    ]


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
    # Ctrl-C and SIGTERM stop it, even when started with SIGINT ignored (a background job of
    # a non-interactive shell inherits that, and Python then installs no handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
