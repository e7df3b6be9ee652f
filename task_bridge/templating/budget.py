"""Bounds on what one event's rules may cost (G11: a rule that explodes costs one operation).

A `RenderBudget` counts the steps a render takes (sandbox calls, attribute and item reads,
operators, loop iterations over `range`, output chunks) and its time, per event; a rendered
text or operator result longer than `max_chars` is refused before it is built. Exceeding a
bound raises `RenderLimitError`, which dead-letters the op being rendered. One budget per
thread (ingest threads and the delivery loop render independently).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from task_bridge import defaults

DEFAULT_MAX_STEPS = defaults.RENDER_STEPS
DEFAULT_MAX_SECONDS = defaults.RENDER_TIME_S
DEFAULT_MAX_CHARS = defaults.PAYLOAD_BYTES
MAX_INT_BITS = 65_536
"""An integer operator result may not grow past this many bits (`10**10**9` would take
minutes and gigabytes)."""
_CLOCK_EVERY = 1024  # steps between two looks at the clock


class RenderLimitError(RuntimeError):
    """A render went past its budget (steps, time or size)."""


class RenderBudget(threading.local):
    def __init__(
        self,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.max_chars = max_chars
        self.steps = 0
        self.deadline = math.inf

    def start(self) -> None:
        """A new event: the whole budget again."""
        self.steps = 0
        self.deadline = time.monotonic() + self.max_seconds

    def spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.max_steps:
            raise RenderLimitError(
                f"render budget exceeded: more than {self.max_steps} steps for one event"
                " (limits.render_steps)"
            )
        if self.steps % _CLOCK_EVERY < steps and time.monotonic() > self.deadline:
            raise RenderLimitError(
                f"render budget exceeded: more than {self.max_seconds:g} s for one event"
                " (limits.render_time)"
            )

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise RenderLimitError(
                f"{what} of {size} characters is over the limit of {self.max_chars}"
                " (limits.payload_bytes)"
            )

    def binop(self, operator: str, left: Any, right: Any) -> None:
        """Refuse an operator whose result would be too big, before computing it."""
        self.spend()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    self.check_size(len(seq) * max(n, 0), "a repeated value")
            if isinstance(left, int) and isinstance(right, int):
                self._bits(abs(left).bit_length() + abs(right).bit_length())
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1:
                self._bits(right * abs(left).bit_length())
        elif (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
        ):
            self.check_size(len(left) + len(right), "a joined value")

    def _bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimitError(
                f"an integer of about {bits} bits is over the limit of {MAX_INT_BITS} bits"
            )

    def range(self, *args: int) -> Iterator[int]:
        """`range()` in templates: every item it yields is a step."""
        items = range(*args)
        self.spend()
        for item in items:
            self.spend()
            yield item

    def chunks(self, parts: Iterator[str]) -> Iterator[str]:
        """A template's output, counted and bounded as it is produced."""
        size = 0
        for part in parts:
            size += len(part)
            self.check_size(size, "a rendered text")
            self.spend()
            yield part
