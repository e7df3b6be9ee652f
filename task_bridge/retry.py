"""Retry timing: exponential backoff with full jitter, honouring Retry-After. Pure; rng injected.

The window is tenacity's `wait_exponential` (the upper bound that `wait_random_exponential`
draws from). The draw itself is `rng.uniform(0, window)` here because tenacity's random wait
uses the global `random` module, which tests cannot seed per call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import cast

from tenacity import RetryCallState, wait_exponential

from task_bridge import defaults

DEFAULT_MAX_ATTEMPTS = defaults.MAX_ATTEMPTS
DEFAULT_INITIAL_BACKOFF_S = defaults.INITIAL_BACKOFF_S
DEFAULT_MAX_BACKOFF_S = defaults.MAX_BACKOFF_S
DEFAULT_MAX_AGE_S = defaults.MAX_AGE_S


class _Attempt:
    """The one field of tenacity's RetryCallState that its wait strategies read."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed delivery, and when to give up (the op then goes dead)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF_S
    max_backoff: float = DEFAULT_MAX_BACKOFF_S
    max_age: float = DEFAULT_MAX_AGE_S

    def window(self, attempts: int) -> float:
        """Jitter window after `attempts` failures: min(max_backoff, initial * 2**(attempts-1))."""
        wait = wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff, exp_base=2)
        return float(wait(cast(RetryCallState, _Attempt(max(1, attempts)))))

    def decide(
        self,
        attempts: int,
        created_at: float,
        now: float,
        retry_after: float | None,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        `attempts` counts the failures so far. Full jitter: uniform(0, window). A Retry-After
        from the API is a floor, and is honoured even when it exceeds max_backoff.
        """
        if attempts >= self.max_attempts or now - created_at >= self.max_age:
            return None
        delay = rng.uniform(0.0, self.window(attempts))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
