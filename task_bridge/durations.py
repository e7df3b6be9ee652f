"""Durations (`500ms`, `10s`, `5m`, `24h`, `7d`) and rates (`60/min`) as config types."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


def parse_duration(value: object) -> float:
    """Seconds from `10s`, `500ms`... Bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms, 5m, 24h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d (e.g. 10s)")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: `0.5` -> `500ms`, `300` -> `5m`, `86400` -> `1d`."""
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    ms = seconds * 1000
    return f"{int(ms)}ms" if ms == int(ms) else f"{seconds:g}s"


def format_rate(per_second: float) -> str:
    """`1.0` -> `1/s`, `1/60` -> `60/min`, `1/3600` -> `1/hour`... as exactly as it goes."""
    for unit, span in (("s", 1.0), ("min", 60.0), ("hour", 3600.0)):
        count = round(per_second * span, 9)
        if count >= 1 and count == int(count):
            return f"{int(count)}/{unit}"
    return f"{per_second * 3600:g}/hour"


def parse_rate(value: object) -> float:
    """Requests per second from `60/min`, `5/s`, `1000/hour`."""
    if isinstance(value, str):
        m = _RATE.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) / _PER[m.group(2)]
    raise ValueError(f"invalid rate {value!r}: use N/s, N/min or N/hour (e.g. 60/min)")


_ENV_REF = r".*\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}.*"
"""A `${VAR}` reference, expanded before validation: the schema lets one stand for a value."""
DURATION_PATTERN = rf"^(\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*|{_ENV_REF})$"
RATE_PATTERN = rf"^(\s*\d+(\.\d+)?\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*|{_ENV_REF})$"

_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": DURATION_PATTERN, "examples": ["500ms", "10s", "5m"]},
            {"type": "number", "minimum": 0, "description": "seconds"},
        ],
        "x-unit": "duration",
    }
)
_RATE_SCHEMA = WithJsonSchema(
    {"type": "string", "pattern": RATE_PATTERN, "examples": ["60/min"], "x-unit": "rate"}
)

Duration = Annotated[float, BeforeValidator(parse_duration), _DURATION_SCHEMA]
"""Seconds; written `500ms`, `10s`, `5m`, `24h`, `7d` (a bare number is seconds)."""
Rate = Annotated[float, BeforeValidator(parse_rate), _RATE_SCHEMA]
"""Requests per second; written `5/s`, `60/min`, `1000/hour`."""
