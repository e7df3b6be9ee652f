"""The rule file format (SPEC section 5) as pydantic models; unknown keys are errors.

Shorthand accepted, one shape stored: `on: insert` is `on: [insert]`, `table: orders` is
`table: public.orders`. Template strings are kept as written; `loader` compiles them.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from task_bridge.events import Op

EventOp = Op
OnError = Literal["stop", "skip", "retry"]
DEFAULT_ON: Final[tuple[EventOp, ...]] = ("insert", "update")
DEFAULT_SCHEMA: Final = "public"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(_Model):
    """One task operation a rule causes: `op` on the task `uid` of `target`."""

    op: str = Field(min_length=1)
    target: str = Field(min_length=1)
    uid: str = Field(min_length=1)
    task: dict[str, Any] | None = None
    when: str | None = None
    id: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Names this step of the chain; later actions read `steps.<id>.ok/status/response`."""
    on_error: OnError = "retry"
    """When this step fails for good: `retry` waits for a redrive, `stop` skips the rest of
    the chain, `skip` goes on with the next step (which sees `steps.<id>.ok == false`)."""


class Rule(_Model):
    """Which events matter (`table`, `on`, `when`) and what they cause (`actions`)."""

    name: str = Field(min_length=1)
    table: str = Field(min_length=1)
    on: list[EventOp] = Field(default_factory=lambda: list(DEFAULT_ON), min_length=1)
    when: str | None = None
    actions: list[Action]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("on", mode="before")
    @classmethod
    def _one_op(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("table")
    @classmethod
    def _qualify(cls, value: str) -> str:
        value = value.strip()
        parts = value.split(".")
        if len(parts) > 2 or not all(parts):
            raise ValueError("use schema.table (e.g. public.orders); a glob is allowed (public.*)")
        return value if len(parts) == 2 else f"{DEFAULT_SCHEMA}.{value}"
