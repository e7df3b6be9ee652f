"""Wait on a condition with a deadline (never sleep as synchronisation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message or probe}: {last!r}"
            )
        time.sleep(interval)
        last = probe()
    return last
