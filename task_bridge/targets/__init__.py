"""Task API targets: one module per API, each registered here with one line.

The registry maps a config `kind` to (config model, factory); the config's union of target
models, the list of kinds `validate` suggests from, and `build_target` are all derived from it.
Adding a target: write its module (config model + target class), then `register(...)` it;
CONTRIBUTING.md walks through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from task_bridge.sources.base import Source
from task_bridge.targets.base import Call, Delivered, Target, TargetDeps, TargetFactory
from task_bridge.targets.copilotz import CopilotzConfig, CopilotzTarget
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget
from task_bridge.targets.generic import GenericHttpTarget, HttpTargetConfig
from task_bridge.targets.http import TargetConfigBase
from task_bridge.targets.humanlambdas import HumanLambdasConfig, HumanLambdasTarget
from task_bridge.targets.humanlambdas_poller import completed_task_sources
from task_bridge.targets.workflow import WorkflowConfig, WorkflowTarget

SourcesFactory = Callable[[str, Any, logging.Logger], list[Source]]


@dataclass(frozen=True)
class TargetKind:
    kind: str
    config: type[TargetConfigBase]
    factory: TargetFactory
    sources: SourcesFactory | None = None
    """Change sources a target of this kind also is (e.g. completed tasks read back)."""


REGISTRY: dict[str, TargetKind] = {}


def register(
    config: type[TargetConfigBase],
    factory: TargetFactory,
    sources: SourcesFactory | None = None,
) -> None:
    """Make a target family known: `config` is its model (its `kind: Literal["name"]` field
    names the family), `factory(name, config, deps)` builds one target; `sources(name,
    config, logger)`, if given, the change sources it feeds back. Registering a kind again replaces
    it."""
    annotation = config.model_fields["kind"].annotation
    kinds = get_args(annotation)
    if len(kinds) != 1 or not isinstance(kinds[0], str):
        raise TypeError(f"{config.__name__}.kind must be a Literal of one name, not {annotation}")
    REGISTRY[kinds[0]] = TargetKind(kinds[0], config, factory, sources)


def target_kinds() -> list[str]:
    return sorted(REGISTRY)


def build_target(name: str, config: TargetConfigBase, deps: TargetDeps) -> Target:
    return REGISTRY[config.kind].factory(name, config, deps)


def target_sources(name: str, config: TargetConfigBase, logger: logging.Logger) -> list[Source]:
    """The change sources a configured target feeds back (none for most kinds)."""
    sources = REGISTRY[config.kind].sources
    return [] if sources is None else sources(name, config, logger)


register(FragmentConfig, FragmentTarget)
register(HumanLambdasConfig, HumanLambdasTarget, completed_task_sources)
register(CopilotzConfig, CopilotzTarget)
register(WorkflowConfig, WorkflowTarget)
register(HttpTargetConfig, GenericHttpTarget)

__all__ = [
    "REGISTRY",
    "Call",
    "Delivered",
    "Target",
    "TargetConfigBase",
    "TargetDeps",
    "TargetKind",
    "build_target",
    "register",
    "target_kinds",
    "target_sources",
]
