"""JSON as sent to task APIs and stored in the outbox: exact numbers, ISO dates, UUID strings.

What no JSON number or orjson type says, this module decides (README, "Types"):
- float NaN, Infinity, -Infinity (float4/float8 columns, numeric NaN) -> the JSON strings
  `"NaN"`, `"Infinity"`, `"-Infinity"`, never `null`;
- integers of any size (json/jsonb documents, template arithmetic) -> the exact JSON number;
- a json/jsonb number no float can hold (`1e400`, `1e-400`) reaches rules as a `JsonNumber`
  (a Decimal) and leaves as the same number;
- a time with a time zone (`timetz`) -> ISO 8601 text with its offset (`"12:34:56+02:00"`);
- an interval (timedelta) -> an ISO 8601 duration (`"P1DT2H"`); bytea -> base64; a range ->
  `{"lower", "upper", "bounds"}` (`{"empty": true}`), a multirange -> a list of those; inet
  and cidr -> their text.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any
from uuid import UUID

import orjson
from psycopg.types.multirange import Multirange
from psycopg.types.range import Range

from task_bridge.events import UNCHANGED


class PayloadError(ValueError):
    """A payload value cannot be sent as JSON."""


class JsonNumber(Decimal):
    """A json/jsonb number a float cannot hold (beyond ±1.8e308, or so small it would round
    to 0): kept exact; rules see a Decimal, JSON gets the number itself."""

    __slots__ = ()


def json_float(text: str) -> float | JsonNumber:
    """`parse_float` for json/jsonb documents: a float, unless that would lose the number."""
    value = float(text)
    if math.isinf(value) or (value == 0.0 and _nonzero(text)):
        return JsonNumber(text)
    return value


def _nonzero(text: str) -> bool:
    mantissa = text.lower().partition("e")[0]
    return any(c in "123456789" for c in mantissa)


_DECODER = json.JSONDecoder(parse_float=json_float)


def loads_payload(text: str | bytes) -> Any:
    """JSON text -> objects, as `dumps_payload` wrote them: integers exact (the stdlib
    parser; orjson turns those over 64 bits into floats) and numbers beyond a float's range
    as `JsonNumber`. (One decoder for all: `json.loads` with options builds one per call.)"""
    return _DECODER.decode(text if isinstance(text, str) else text.decode("utf-8"))


_IP = (IPv4Address, IPv6Address, IPv4Network, IPv6Network)  # the interfaces are addresses


def iso_duration(value: timedelta) -> str:
    """An interval as ISO 8601: `P428DT4H5M6.789S`, `-P3D`, `PT0S` (days, hours, minutes,
    seconds; psycopg has already counted a month as 30 days and a year as 365)."""
    micros = abs(value) // timedelta(microseconds=1)
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{second}.{micro:06d}".rstrip("0").rstrip(".") if micro else str(second)
    time_part = "".join(f"{n}{unit}" for n, unit in ((hour, "H"), (minute, "M")) if n) + (
        f"{text}S" if second or micro else ""
    )
    out = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    if out == "P":
        out = "PT0S"
    return f"-{out}" if value < timedelta(0) else out


def _default(value: Any) -> Any:
    if value is UNCHANGED:
        raise PayloadError(
            "a value is an unchanged TOASTed column (UNCHANGED): it is not available in this event"
        )
    if isinstance(value, JsonNumber):
        return orjson.Fragment(str(value))
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple | Multirange):
        return list(value)
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    if isinstance(value, Range):
        if value.isempty:
            return {"empty": True}
        return {"lower": value.lower, "upper": value.upper, "bounds": value.bounds}
    if isinstance(value, _IP):
        return str(value)
    raise PayloadError(f"value of type {type(value).__name__} cannot be sent as JSON")


_OPTIONS = orjson.OPT_NON_STR_KEYS
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes itself
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def dumps_payload(obj: Any) -> str:
    """Decimal -> exact string ("12.50"), datetime/date/time -> ISO 8601, UUID -> str, and
    the cases of the module docstring.

    orjson (about 7x the stdlib encoder on typical payloads, the same compact output). It
    writes NaN and infinities as `null` and refuses integers over 64 bits and times with a
    zone; a payload holding one of those (its output has a `null`, or orjson refused it) is
    encoded again from a copy where they are replaced (`_exact`)."""
    try:
        out = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, PayloadError):
            raise exc.__cause__ from None
        return _dumps_exact(obj, exc)
    if b"null" in out and _has_non_finite(obj):
        return _dumps_exact(obj, None)
    return out.decode()


def payload_size(obj: Any) -> int:
    """The length of `dumps_payload(obj)` in characters, give or take one per NaN or infinity
    (it skips the look for them: this is for size limits)."""
    try:
        return len(orjson.dumps(obj, default=_default, option=_OPTIONS).decode())
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, PayloadError):
            raise exc.__cause__ from None
        return len(_dumps_exact(obj, exc))


def _dumps_exact(obj: Any, first: orjson.JSONEncodeError | None) -> str:
    try:
        exact = _exact(obj)
    except RecursionError:  # deeper than orjson goes anyway: its own message says so
        raise PayloadError(str(first or "the payload is nested too deeply")) from None
    except ValueError as exc:  # an integer of more digits than Python writes (4300)
        raise PayloadError(str(exc)) from None
    try:
        return orjson.dumps(exact, default=_default, option=_OPTIONS).decode()
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, PayloadError):
            raise exc.__cause__ from None
        raise PayloadError(str(exc)) from exc


def _exact(value: Any) -> Any:
    """A copy of `value` where what orjson gets wrong is replaced (see `dumps_payload`)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT_MIN <= value <= _INT_MAX else orjson.Fragment(str(value))
    if isinstance(value, time) and value.tzinfo is not None:
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_exact(v) for v in value]
    return value


_LEAVES = frozenset({str, int, bool, type(None), Decimal, JsonNumber, datetime, date, UUID})
"""Types the check below passes over at once."""


def _has_non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is anywhere in `value` (a loop over exact types first:
    this runs for every payload with a `null`)."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is dict:
            push(item.values())
        elif kind is list:
            push(item)
        elif kind is float:
            if item - item != 0.0:  # NaN for NaN and both infinities
                return True
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            push(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            push(item)
    return False
