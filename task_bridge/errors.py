"""One exception tree for the whole bridge.

Callers catch by what they do next::

    BridgeError
     +-- ConfigError              bad bridge.yaml: exit 1, message names file:line and key path
     +-- RuleError                bad rule file or a rule failing on one event
     |    +-- TemplateError       a template could not render for this event (dead-letters one op)
     +-- SourceError              the change source failed
     |    +-- SourceUnavailable   cannot connect (exit 2); retried with backoff while running
     +-- OutboxError              the outbox database failed
     |    +-- OutboxUnavailable   cannot connect to it, or it cannot take writes (exit 2)
     +-- DeliveryError            a target refused or failed an operation
          +-- TransientDeliveryError   retry with backoff
          |    +-- RetryAfter          the API asked us to wait (a signal, not a failure)
          +-- PermanentDeliveryError   mark the op dead, park later ops of its UID
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid. `problems` holds one `file:line: message` per issue."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class RuleError(BridgeError):
    """A rule file is invalid. `problems` holds one `file:line: message` per issue."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class TemplateError(RuleError):
    """A template failed to render for one event."""


class SourceError(BridgeError):
    """The change source failed."""


class SourceUnavailable(SourceError):
    """The change source cannot be reached (connection refused, server restarting...)."""


class OutboxError(BridgeError):
    """The outbox database failed."""


class OutboxUnavailable(OutboxError):
    """The outbox database cannot be reached, or cannot take writes now (disk full, I/O
    error, locked by another process)."""


class DeliveryError(BridgeError):
    """A target failed to apply an operation."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class TransientDeliveryError(DeliveryError):
    """Worth retrying: connect/read errors, timeouts, 5xx, 408, 409, 425, 429."""


class RetryAfter(TransientDeliveryError):
    """The API asked us to come back after `seconds`."""

    def __init__(
        self, seconds: float, message: str = "", *, http_status: int | None = None
    ) -> None:
        super().__init__(message or f"retry after {seconds:g}s", http_status=http_status)
        self.seconds = seconds


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: 4xx (other than the transient ones), schema errors."""


EXIT_OK, EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_INTERNAL = 0, 1, 2, 3
"""Process exit codes (README "Exit codes")."""


def exit_code(error: BaseException | None) -> int:
    """The one mapping of an error to the process's exit code: none 0; a config, rule or
    other bridge error 1; a source or outbox that cannot be reached or written 2; anything
    else (a bug) 3."""
    if error is None:
        return EXIT_OK
    if isinstance(error, SourceUnavailable | OutboxUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(error, BridgeError):
        return EXIT_INVALID
    return EXIT_INTERNAL
