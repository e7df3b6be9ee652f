"""The rule file format (docs/rules.md) as pydantic models; unknown keys are errors.

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
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Action(_Model):
    """One task operation a rule causes: `op` on the task `uid` of `target`."""

    op: str = Field(min_length=1)
    """`create`, `update`, `close`, `upsert`, or an action of the target (`advance`,
    `complete_step`, `run_automation`, an `http` target's op name)."""
    target: str = Field(min_length=1)
    """A target's name under `targets:` in bridge.yaml."""
    uid: str = Field(min_length=1)
    """Template of the task's deterministic id: the same row must always render the same uid
    (operations of one uid are delivered one at a time, in order)."""
    task: dict[str, Any] | None = None
    """The payload, every string a template (a lone `{{ expr }}` keeps its type); checked
    against the target's own schema by `validate`."""
    when: str | None = None
    """Jinja expression (no braces): this action runs only when it is true."""
    id: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Names this step of the chain; later actions read `steps.<id>.ok/status/response`."""
    on_error: OnError = "retry"
    """When this step fails for good: `retry` waits for a redrive, `stop` skips the rest of
    the chain, `skip` goes on with the next step (which sees `steps.<id>.ok == false`)."""


class Rule(_Model):
    """Which events matter (`table`, `on`, `when`) and what they cause (`actions`)."""

    name: str = Field(min_length=1)
    """Unique name; part of every operation id (renaming a rule gives its events new ids)."""
    table: str = Field(min_length=1)
    """`schema.table` (a bare name means `public.`); a glob such as `public.*` is allowed;
    `humanlambdas.<queue>` for completed Human Lambdas tasks."""
    on: list[EventOp] = Field(default_factory=lambda: list(DEFAULT_ON), min_length=1)
    """Event ops the rule reacts to (one op or a list)."""
    when: str | None = None
    """Jinja expression (no braces) over the event: the rule fires only when it is true."""
    actions: list[Action]
    """Task operations to cause, in order (a chain when there are several)."""

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
