"""Task API targets: one module per API, all behind the `base.Target` protocol.

`build_target` is the one place that maps a config `kind` to its implementation.
"""

from __future__ import annotations

import logging
from typing import Annotated

import httpx
from pydantic import Field

from task_bridge.targets.base import Target, TargetStore
from task_bridge.targets.copilotz import CopilotzConfig, CopilotzTarget
from task_bridge.targets.fragment import FragmentConfig, FragmentTarget
from task_bridge.targets.generic import GenericHttpTarget, HttpTargetConfig
from task_bridge.targets.humanlambdas import HumanLambdasConfig, HumanLambdasTarget
from task_bridge.targets.workflow import WorkflowConfig, WorkflowTarget

AnyTargetConfig = (
    FragmentConfig | HumanLambdasConfig | CopilotzConfig | WorkflowConfig | HttpTargetConfig
)
TargetConfig = Annotated[AnyTargetConfig, Field(discriminator="kind")]
TARGET_CONFIGS: tuple[type[AnyTargetConfig], ...] = (
    FragmentConfig,
    HumanLambdasConfig,
    CopilotzConfig,
    WorkflowConfig,
    HttpTargetConfig,
)
TARGET_KINDS = ("fragment", "humanlambdas", "copilotz", "workflow", "http")


def build_target(
    name: str,
    config: AnyTargetConfig,
    client: httpx.AsyncClient,
    store: TargetStore,
    logger: logging.Logger,
) -> Target:
    if isinstance(config, FragmentConfig):
        return FragmentTarget(name, config, client)
    if isinstance(config, HumanLambdasConfig):
        return HumanLambdasTarget(name, config, client, logger)
    if isinstance(config, CopilotzConfig):
        return CopilotzTarget(name, config, client, store)
    if isinstance(config, WorkflowConfig):
        return WorkflowTarget(name, config, client, store)
    return GenericHttpTarget(name, config, client, store)


__all__ = ["TARGET_CONFIGS", "TARGET_KINDS", "TargetConfig", "build_target"]
