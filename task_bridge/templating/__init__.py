"""The one sandboxed Jinja2 environment of the bridge, with its per-event budget.

Rules (`task_bridge.rules`), chain steps rendered at send time, and the `http` target's request
templates all compile through `Templates`, so they share one set of filters, the same
restrictions (no clock, no randomness, no unsafe attributes) and the same limits
(`limits.render_steps`, `limits.render_time`, `limits.payload_bytes`).
"""

from task_bridge.templating.budget import RenderBudget, RenderLimitError
from task_bridge.templating.sandbox import Renderer, Templates, UnchangedValueError

__all__ = ["RenderBudget", "RenderLimitError", "Renderer", "Templates", "UnchangedValueError"]
