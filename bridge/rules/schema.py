"""The rule file format (SPEC section 5) as pydantic models; unknown keys are errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EventOp = Literal["insert", "update", "delete", "snapshot", "truncate", "completed"]
DEFAULT_ON: tuple[EventOp, ...] = ("insert", "update")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionModel(_Model):
    op: str = Field(min_length=1)
    target: str = Field(min_length=1)
    uid: str = Field(min_length=1)
    task: dict[str, Any] | None = None
    when: str | None = None


class RuleModel(_Model):
    name: str = Field(min_length=1)
    table: str = Field(min_length=1)
    on: list[EventOp] = Field(default_factory=lambda: list(DEFAULT_ON), min_length=1)
    when: str | None = None
    actions: list[ActionModel] = Field(default_factory=list)

    @field_validator("table")
    @classmethod
    def _qualify(cls, value: str) -> str:
        value = value.strip()
        if value.count(".") > 1:
            raise ValueError("use schema.table (e.g. public.orders), a glob is allowed (public.*)")
        return value if "." in value else f"public.{value}"
