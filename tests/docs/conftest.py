"""The shipped reference and schemas describe the built-in targets only: a target that another
test module registers when it is collected (tests/integration/test_custom_target.py) is hidden
while these tests run, and put back after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from task_bridge.targets import REGISTRY


@pytest.fixture(autouse=True)
def _builtin_targets_only() -> Iterator[None]:
    saved = dict(REGISTRY)
    for kind, entry in saved.items():
        if not entry.config.__module__.startswith("task_bridge."):
            del REGISTRY[kind]
    try:
        yield
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)
