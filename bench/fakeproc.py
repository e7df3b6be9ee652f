"""The fake Fragment API in its own process, so it does not share a GIL with what is measured."""

from __future__ import annotations

import gc
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from task_bridge.fakes.fragment import FakeFragment

TOKEN = "bench-token"
FREEZE_EVERY_S = 1.0


def _freeze_periodically() -> None:
    """The fake keeps every request in its ledger (60k entries after the latency run), and
    Python's full collections walk all of it: the fake paused 70-110 ms every ~15 s, which
    the bench counted as the bridge's latency. Moving what exists into the permanent
    generation every second keeps each collection to the last second's objects (garbage that
    gets frozen stays until the process ends, with the bench)."""
    while True:
        time.sleep(FREEZE_EVERY_S)
        gc.freeze()


def _serve(conn: Connection) -> None:
    fake = FakeFragment(token=TOKEN).start()
    threading.Thread(target=_freeze_periodically, daemon=True).start()
    conn.send(fake.port)
    while True:
        command, arg = conn.recv()
        if command == "stop":
            fake.stop()
            conn.send(None)
            return
        if command == "ledger":
            conn.send(
                [
                    {"t": e["t"], "uid": e["uid"], "status": e["status"], "body": e["body"]}
                    for e in fake.ledger()
                ]
            )
        elif command == "fault":
            fake.add_fault(arg)
            conn.send(None)
        elif command == "clear":
            fake.clear_faults()
            conn.send(None)
        elif command == "reset":
            fake.reset()
            conn.send(None)
        elif command == "count":
            conn.send(fake.ledger_size())
        elif command == "items":  # operations applied, batch items counted one by one
            conn.send(
                sum(
                    len(e["body"]["items"]) if e["path"] == "/tasks/batch" else 1
                    for e in fake.ledger()
                    if e["status"] == 200
                )
            )
        elif command == "tasks":
            conn.send(len(fake.tasks()))
        elif command == "rate_limit":
            fake.rate_limit_per_min = arg
            conn.send(None)
        elif command == "rate_limited":
            conn.send(fake.rate_limited)


class FakeProcess:
    def __init__(self) -> None:
        self._conn, child = mp.Pipe()
        self._proc = mp.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self.port: int = self._conn.recv()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def call(self, command: str, arg: Any = None) -> Any:
        with self._lock:
            self._conn.send((command, arg))
            return self._conn.recv()

    def stop(self) -> None:
        self.call("stop")
        self._proc.join(10)
