"""Text loaders the decoder uses instead of psycopg's, where psycopg's would be wrong.

`interval`: psycopg_binary's C loader computes the days of the years and months in 32-bit
integers and wraps silently (`-178000000 years` loads as -545490560 days, not raise), and
psycopg's Python loader only works on a connection. This one reads the `postgres`
IntervalStyle the replication session sets, as psycopg does (a year is 365 days, a month 30),
with Python integers: an interval past `timedelta` raises `DataError`, so the decoder keeps
its text (README, "Types").
"""

from __future__ import annotations

import re
from datetime import timedelta

from psycopg import DataError
from psycopg.abc import Buffer
from psycopg.adapt import Loader

_INTERVAL = re.compile(
    rb"""
    (?: ([-+]?\d+) \s+ years? \s* )?
    (?: ([-+]?\d+) \s+ mons? \s* )?
    (?: ([-+]?\d+) \s+ days? \s* )?
    (?: ([-+])? (\d+) : (\d+) : (\d+) (?: \. (\d{1,6}) )? )?
    $""",
    re.VERBOSE,
)


class IntervalLoader(Loader):
    def load(self, data: Buffer) -> timedelta:
        text = bytes(data)
        match = _INTERVAL.match(text)
        if match is None:
            raise DataError(f"can't parse interval {text.decode('utf-8', 'replace')!r}")
        years, months, days, sign, hours, minutes, seconds, fraction = match.groups()
        total_days = 365 * int(years or 0) + 30 * int(months or 0) + int(days or 0)
        micros = 0
        if hours is not None:
            micros = (int(hours) * 3600 + int(minutes) * 60 + int(seconds)) * 1_000_000
            micros += int((fraction or b"").ljust(6, b"0") or 0)
            if sign == b"-":
                micros = -micros
        try:
            return timedelta(days=total_days, microseconds=micros)
        except OverflowError as exc:
            raise DataError(f"interval {text.decode()!r} is beyond Python's: {exc}") from None
