"""Fault tests reuse the end-to-end fixtures."""

from tests.integration.conftest import bridge_env, fake_fragment

__all__ = ["bridge_env", "fake_fragment"]
