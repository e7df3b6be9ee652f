"""Rules: YAML rule files -> compiled rules -> `RuleEngine.evaluate(event) -> [Operation]`.

schema.py     the rule file format (pydantic, unknown keys rejected)
loader.py     files / inline list -> RuleSet; every problem as `file:line: message`
chains.py     rule chains: deferred steps rendered at send time (`ChainRenderer`)
engine.py     pure, deterministic evaluation; a failing template fails one operation
"""

from task_bridge.rules.engine import RuleEngine
from task_bridge.rules.loader import CompiledAction, CompiledRule, RuleSet, TargetSpec, load_rules
from task_bridge.rules.schema import Action, Rule
from task_bridge.templating.sandbox import Templates, UnchangedValueError

__all__ = [
    "Action",
    "CompiledAction",
    "CompiledRule",
    "Rule",
    "RuleEngine",
    "RuleSet",
    "TargetSpec",
    "Templates",
    "UnchangedValueError",
    "load_rules",
]
