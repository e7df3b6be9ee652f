"""Retry timing: exponential backoff with full jitter, honouring Retry-After. Pure; rng injected."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import RetryCallState, wait_exponential

DEFAULT_MAX_ATTEMPTS = 12
DEFAULT_INITIAL_BACKOFF_S = 0.5
DEFAULT_MAX_BACKOFF_S = 300.0
DEFAULT_MAX_AGE_S = 86400.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF_S
    max_backoff: float = DEFAULT_MAX_BACKOFF_S
    max_age: float = DEFAULT_MAX_AGE_S

    def cap(self, attempts: int) -> float:
        """Upper bound of the delay after `attempts` failed attempts (tenacity's exponential)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempts)
        wait = wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff, exp_base=2)
        return float(wait(state))

    def decide(
        self,
        attempts: int,
        created_at: float,
        now: float,
        retry_after: float | None,
        rng: random.Random,
    ) -> float | None:
        """Delay before the next attempt, or None to give up (the op goes dead).

        Full jitter: uniform(0, cap). A `Retry-After` from the API is a floor.
        """
        if attempts >= self.max_attempts or now - created_at >= self.max_age:
            return None
        delay = rng.uniform(0.0, self.cap(attempts))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
