"""Per-target circuit breakers for delivery: a down API is not hammered with every queued op.

After THRESHOLD consecutive transient failures a target is *open*: delivery claims and starts
nothing for it while it is paused, and one probe when the pause is over. The pause grows like the
retry backoff (initial_backoff * 2^n, at most max_backoff). One success closes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from task_bridge.observability import log
from task_bridge.retry import RetryPolicy

THRESHOLD = 5
"""Consecutive transient failures of a target before its claims pause."""


class _Health:
    __slots__ = ("failures", "paused_until")

    def __init__(self) -> None:
        self.failures = 0
        self.paused_until = 0.0


class Breakers:
    def __init__(self, targets: Iterable[str], policy: RetryPolicy, logger: logging.Logger):
        self._health = {name: _Health() for name in targets}
        self.policy = policy
        self.log = logger

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self._health)

    def is_open(self, name: str) -> bool:
        health = self._health.get(name)
        return health is not None and health.failures >= THRESHOLD

    def paused(self, name: str, now: float) -> bool:
        """Open and still in its pause: nothing goes out, not even a probe."""
        health = self._health.get(name)
        return health is not None and health.failures >= THRESHOLD and health.paused_until > now

    def open_targets(self) -> list[str]:
        return [name for name, h in self._health.items() if h.failures >= THRESHOLD]

    def pauses_left(self, now: float) -> list[float]:
        """Seconds until each current pause ends."""
        return [h.paused_until - now for h in self._health.values() if h.paused_until > now]

    def ok(self, name: str) -> None:
        health = self._health.get(name)
        if health is not None and health.failures:
            if health.failures >= THRESHOLD:
                log(self.log, logging.INFO, "target.resumed", target=name)
            health.failures = 0
            health.paused_until = 0.0

    def failed(self, name: str, now: float) -> None:
        """Count a transient failure; from THRESHOLD on, pause the target."""
        health = self._health.get(name)
        if health is None:
            return
        health.failures += 1
        excess = health.failures - THRESHOLD
        if excess >= 0 and health.paused_until <= now:
            policy = self.policy
            pause = min(policy.max_backoff, policy.initial_backoff * 2 ** min(excess, 30))
            health.paused_until = now + pause
            log(
                self.log,
                logging.WARNING,
                "target.paused",
                target=name,
                consecutive_failures=health.failures,
                retry_in_s=round(pause, 3),
            )
