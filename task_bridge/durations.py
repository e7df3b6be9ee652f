"""Durations (`500ms`, `10s`, `5m`, `24h`, `7d`) and rates (`60/min`) as config types."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

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


def parse_rate(value: object) -> float:
    """Requests per second from `60/min`, `5/s`, `1000/hour`."""
    if isinstance(value, str):
        m = _RATE.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) / _PER[m.group(2)]
    raise ValueError(f"invalid rate {value!r}: use N/s, N/min or N/hour (e.g. 60/min)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
