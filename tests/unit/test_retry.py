"""RetryPolicy: full-jitter exponential backoff, Retry-After floor, give-up rules. No sleeping."""

from __future__ import annotations

import random

import pytest

from task_bridge.retry import (
    DEFAULT_INITIAL_BACKOFF_S,
    DEFAULT_MAX_AGE_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_S,
    RetryPolicy,
)


def test_defaults_match_the_spec() -> None:
    """The default policy is 12 attempts, 500 ms initial, 5 min cap, 24 h max age."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff, policy.max_backoff, policy.max_age) == (
        DEFAULT_MAX_ATTEMPTS,
        DEFAULT_INITIAL_BACKOFF_S,
        DEFAULT_MAX_BACKOFF_S,
        DEFAULT_MAX_AGE_S,
    )
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_BACKOFF_S) == (12, 0.5)
    assert (DEFAULT_MAX_BACKOFF_S, DEFAULT_MAX_AGE_S) == (300.0, 86400.0)


@pytest.mark.parametrize(
    ("attempts", "cap"), [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (10, 256.0), (11, 300.0)]
)
def test_window_doubles_up_to_max_backoff(attempts: int, cap: float) -> None:
    """The jitter window after n failed attempts is min(max_backoff, initial * 2**(n-1))."""
    assert RetryPolicy().window(attempts) == cap
    assert RetryPolicy(max_attempts=10_000).window(5000) == 300.0, "no overflow"


def test_delay_is_full_jitter_within_the_window() -> None:
    """Delays are spread uniformly over [0, window]: bounded, and not all near the top."""
    policy = RetryPolicy(max_attempts=100)
    rng = random.Random(42)
    for attempts in range(1, 15):
        delays = [policy.decide(attempts, 0.0, 1.0, None, rng) for _ in range(200)]
        window = policy.window(attempts)
        assert all(d is not None and 0.0 <= d <= window for d in delays)
        assert min(d for d in delays if d is not None) < window / 4, "full jitter reaches low"


def test_seeded_rng_gives_repeatable_delays() -> None:
    """The same seed gives the same delays: the random source is the one passed in."""
    policy = RetryPolicy()
    first = [policy.decide(3, 0.0, 1.0, None, random.Random(7)) for _ in range(3)]
    assert first == [random.Random(7).uniform(0.0, 2.0)] * 3


def test_gives_up_after_max_attempts_or_max_age() -> None:
    """None (give up) once attempts reach max_attempts or the op is older than max_age."""
    policy = RetryPolicy(max_attempts=3, max_age=60.0)
    rng = random.Random(1)
    assert policy.decide(2, created_at=0.0, now=10.0, retry_after=None, rng=rng) is not None
    assert policy.decide(3, created_at=0.0, now=10.0, retry_after=None, rng=rng) is None
    assert policy.decide(1, created_at=0.0, now=59.9, retry_after=None, rng=rng) is not None
    assert policy.decide(1, created_at=0.0, now=60.0, retry_after=None, rng=rng) is None
    assert policy.decide(1, created_at=0.0, now=10.0, retry_after=5.0, rng=rng) is not None


def test_retry_after_is_a_floor_and_may_exceed_max_backoff() -> None:
    """Retry-After raises the delay to at least its value, even above max_backoff."""
    policy = RetryPolicy(max_backoff=10.0)
    rng = random.Random(3)
    for _ in range(50):
        delay = policy.decide(1, 0.0, 1.0, 7.0, rng)
        assert delay is not None and 7.0 <= delay <= 10.0
    assert policy.decide(1, 0.0, 1.0, 600.0, rng) == 600.0
    assert policy.decide(1, 0.0, 1.0, 0.0, random.Random(3)) == random.Random(3).uniform(0, 0.5)


def test_policy_is_frozen() -> None:
    """A RetryPolicy cannot be changed after construction."""
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 3  # type: ignore[misc]
