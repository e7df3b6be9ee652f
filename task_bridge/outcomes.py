"""What a delivery attempt comes to: the `OpResult` for delivered / retry / dead, with its
metrics, its log line and the progress counts delivery reports."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

from task_bridge.errors import RetryAfter, TransientDeliveryError
from task_bridge.observability import Metrics, log
from task_bridge.outbox.base import OpResult, StoredOp
from task_bridge.redaction import Redactor
from task_bridge.retry import RetryPolicy
from task_bridge.targets.base import Delivered


class Outcomes:
    def __init__(
        self,
        policy: RetryPolicy,
        metrics: Metrics,
        logger: logging.Logger,
        clock: Callable[[], float],
        rng: random.Random,
        redact: Redactor,
    ) -> None:
        """`redact` masks the config's secrets in every error and response stored (an API
        error reply may echo the request's `Authorization` header)."""
        self.policy = policy
        self.redact = redact
        self.metrics = metrics
        self.log = logger
        self.clock = clock
        self.rng = rng
        self.stats: Counter[str] = Counter()

    def delivered(
        self, op: StoredOp, attempts: int, delivered: Delivered, latency: float
    ) -> OpResult:
        self.metrics.delivered.labels(op.target).inc()
        self.metrics.latency.labels(op.target).observe(latency)
        self.stats["delivered"] += 1
        if self.log.isEnabledFor(logging.DEBUG):
            log(
                self.log,
                logging.DEBUG,
                "op.delivered",
                **op_context(op),
                attempt=attempts,
                http_status=delivered.http_status,
                latency_ms=round(latency * 1000, 1),
            )
        return OpResult(
            op.seq,
            "delivered",
            attempts,
            self.clock(),
            http_status=delivered.http_status,
            remote_id=delivered.remote_id,
            response=self.redact.value(delivered.response),
        )

    def retry(self, op: StoredOp, attempts: int, exc: TransientDeliveryError) -> OpResult:
        """A transient failure: back off (Retry-After is a floor), or dead when out of budget."""
        now = self.clock()
        error, http_status = self.redact(str(exc)), exc.http_status
        retry_after = exc.seconds if isinstance(exc, RetryAfter) else None
        delay = self.policy.decide(attempts, op.created_at, now, retry_after, self.rng)
        if delay is None:
            return self.dead(
                op, attempts, f"gave up after {attempts} attempts: {error}", http_status
            )
        self.metrics.retries.labels(op.target).inc()
        self.stats["retried"] += 1
        # per op at debug (under load every op may retry); `delivery.progress` counts them
        log(
            self.log,
            logging.DEBUG,
            "op.retry",
            **op_context(op),
            attempt=attempts,
            http_status=http_status,
            error=error,
            retry_in_s=round(delay, 3),
        )
        return OpResult(
            op.seq,
            "retry",
            attempts,
            now,
            next_attempt_at=now + delay,
            error=error,
            http_status=http_status,
        )

    def dead(self, op: StoredOp, attempts: int, reason: str, http_status: int | None) -> OpResult:
        reason = self.redact(reason)
        self.metrics.dead.labels(op.target).inc()
        self.stats["dead"] += 1
        log(
            self.log,
            logging.WARNING,
            "op.dead",
            **op_context(op),
            attempt=attempts,
            http_status=http_status,
            reason=reason,
        )
        return OpResult(
            op.seq, "dead", attempts, self.clock(), error=reason, http_status=http_status
        )


def op_context(op: StoredOp) -> dict[str, object]:
    """The log fields that identify an operation."""
    return {"target": op.target, "uid": op.uid, "op": op.op, "op_id": op.op_id, "rule": op.rule}
