"""The JSON the bridge sends for values JSON has no plain form for (README, "Types")."""

from __future__ import annotations

import math
from datetime import UTC, time, timedelta, timezone
from decimal import Decimal
from ipaddress import ip_interface, ip_network

import pytest
from psycopg.types.multirange import Multirange
from psycopg.types.range import Range

from task_bridge.jsonenc import (
    JsonNumber,
    PayloadError,
    dumps_payload,
    loads_payload,
    payload_size,
)


def test_non_finite_floats_are_strings_never_null() -> None:
    """NaN and the infinities become "NaN"/"Infinity"/"-Infinity" wherever they sit; a real
    None stays null."""
    payload = {"a": math.nan, "b": [math.inf, {"c": -math.inf}], "d": None, "e": 1.5}
    assert dumps_payload(payload) == (
        '{"a":"NaN","b":["Infinity",{"c":"-Infinity"}],"d":null,"e":1.5}'
    )
    assert dumps_payload({"n": Decimal("NaN"), "i": Decimal("-Infinity")}) == (
        '{"n":"NaN","i":"-Infinity"}'
    )


def test_integers_of_any_size_are_exact_numbers() -> None:
    big = 2**200 + 1
    assert dumps_payload({"x": [big, -big, 2**64 - 1, -(2**63)]}) == (
        f'{{"x":[{big},{-big},{2**64 - 1},{-(2**63)}]}}'
    )
    assert loads_payload(dumps_payload({"x": big})) == {"x": big}


def test_a_time_with_a_zone_is_iso_text_with_its_offset() -> None:
    zone = timezone(timedelta(hours=5, minutes=30))
    assert dumps_payload([time(12, 34, 56, 500000, zone), time(1, 2, tzinfo=UTC), time(3)]) == (
        '["12:34:56.500000+05:30","01:02:00+00:00","03:00:00"]'
    )


def test_numbers_past_a_float_keep_their_value_through_the_outbox() -> None:
    """json/jsonb numbers a float cannot hold load as JsonNumber (a Decimal for rules) and
    are written as the same number; the outbox reads them back the same way."""
    loaded = loads_payload("[1e400, -1e400, 1e-400, 0.0, 0e5, 2.5]")
    assert loaded[:3] == [Decimal("1e400"), Decimal("-1e400"), Decimal("1e-400")]
    assert all(isinstance(v, JsonNumber) for v in loaded[:3])
    assert loaded[3:] == [0.0, 0.0, 2.5] and isinstance(loaded[3], float)
    text = dumps_payload(loaded)
    assert text == "[1E+400,-1E+400,1E-400,0.0,0.0,2.5]"
    assert loads_payload(text) == loaded


def test_what_cannot_be_written_is_a_payload_error() -> None:
    """An integer of more digits than Python writes, or a value nested past orjson's limit,
    is refused with the reason (the op goes dead), never written wrong."""
    with pytest.raises(PayloadError, match="4300"):
        dumps_payload({"x": 10**5000})
    deep: list[object] = []
    for _ in range(300):
        deep = [deep, math.nan]
    with pytest.raises(PayloadError, match=r"[Rr]ecursion"):
        dumps_payload(deep)


def test_intervals_bytes_ranges_and_addresses_have_a_json_form() -> None:
    """timedelta -> ISO 8601 duration, bytes -> base64, Range -> lower/upper/bounds (or
    empty), Multirange -> a list of those, inet/cidr -> their text."""
    payload = {
        "span": [timedelta(days=428, seconds=14706, microseconds=789000), timedelta(0)],
        "neg": timedelta(hours=-1),
        "raw": b"\x00\xff\x10",
        "range": Range(Decimal("1.5"), None, "[)"),
        "empty": Range(empty=True),
        "multi": Multirange([Range(1, 3), Range(5, 7)]),
        "ip": [ip_interface("192.168.0.1/24"), ip_network("2001:db8::/32")],
    }
    assert loads_payload(dumps_payload(payload)) == {
        "span": ["P428DT4H5M6.789S", "PT0S"],
        "neg": "-PT1H",
        "raw": "AP8Q",
        "range": {"lower": "1.5", "upper": None, "bounds": "[)"},
        "empty": {"empty": True},
        "multi": [
            {"lower": 1, "upper": 3, "bounds": "[)"},
            {"lower": 5, "upper": 7, "bounds": "[)"},
        ],
        "ip": ["192.168.0.1/24", "2001:db8::/32"],
    }


def test_payload_size_is_the_length_sent() -> None:
    """The size limit measures what is sent (characters), also where orjson needed help."""
    for payload in ({"a": "é" * 10, "b": None}, {"big": 2**100}, {"t": time(1, tzinfo=UTC)}):
        assert payload_size(payload) == len(dumps_payload(payload))
