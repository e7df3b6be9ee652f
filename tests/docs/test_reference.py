"""docs/configuration.md and schema/ are generated from the models: up to date, and every key
has a description (a model gaining an undocumented key fails here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from task_bridge import docgen
from task_bridge.targets import REGISTRY, TargetKind
from task_bridge.targets.fragment import FragmentTarget
from task_bridge.targets.http import TargetConfigBase

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date() -> None:
    """Every generated file equals what `python -m task_bridge.docgen` writes now."""
    for path, content in docgen.generated_files().items():
        shipped = ROOT / path
        assert shipped.exists(), f"{path} missing: run `python -m task_bridge.docgen`"
        assert shipped.read_text(encoding="utf-8") == content, (
            f"{path} is stale: run `python -m task_bridge.docgen`"
        )


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    """`docgen --check` exits 1 naming a file that differs, and writes nothing."""
    assert docgen.main(["--root", str(tmp_path)]) == 0
    page = tmp_path / docgen.CONFIG_PAGE
    page.write_text(page.read_text() + "edited\n")
    assert docgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert page.read_text().endswith("edited\n")
    assert docgen.main(["--root", str(tmp_path)]) == 0
    assert docgen.main(["--root", str(tmp_path), "--check"]) == 0


class _Shade(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Documented."""
    depth: int = 1


class _ProbeConfig(TargetConfigBase):
    kind: Literal["probe"]
    """A target kind for this test."""
    base_url: str = "http://localhost"
    """Where it is."""
    colour: str = "blue"
    shade: str | _Shade = "light"
    """A name, or a mapping of its own."""


def test_a_key_without_description_stops_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config model field without `description=` or docstring is named as undocumented, also
    inside a section that may be written as a plain value instead."""
    monkeypatch.setitem(REGISTRY, "probe", TargetKind("probe", _ProbeConfig, FragmentTarget))
    with pytest.raises(docgen.UndocumentedError) as caught:
        docgen.configuration_page()
    assert caught.value.keys == ["targets.<name>.colour", "targets.<name>.shade.depth"]


def test_every_key_of_the_models_is_in_the_page() -> None:
    """Each field of every config model appears as a row of the page."""
    from task_bridge.config import (
        BridgeConfig,
        DeliveryConfig,
        LimitsConfig,
        OutboxConfig,
        RetryConfig,
    )
    from task_bridge.rules.schema import Action, Rule
    from task_bridge.sources.config import KafkaSourceConfig, PostgresSourceConfig

    page = (ROOT / docgen.CONFIG_PAGE).read_text(encoding="utf-8")
    models = [BridgeConfig, OutboxConfig, DeliveryConfig, RetryConfig, LimitsConfig, Rule, Action]
    models += [PostgresSourceConfig, KafkaSourceConfig, *(k.config for k in REGISTRY.values())]
    for model in models:
        for name in model.model_fields:
            assert f"| `{name}` |" in page, f"{model.__name__}.{name}"
