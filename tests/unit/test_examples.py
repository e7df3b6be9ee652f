"""The files users copy (rules/, bridge.example.yaml) load and validate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from task_bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_and_rules_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bridge.example.yaml with the rules/ directory passes `bridge validate`."""

    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/app")
    monkeypatch.setenv("FRAGMENT_TOKEN", "example")
    shutil.copy(ROOT / "bridge.example.yaml", tmp_path / "bridge.yaml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    assert main(["validate", "-c", str(tmp_path / "bridge.yaml")]) == 0
    assert sorted(p.name for p in (ROOT / "rules").glob("*.yaml")), "examples exist"


@pytest.mark.parametrize("rule_file", sorted((ROOT / "rules").glob("*.yaml")), ids=lambda p: p.name)
def test_each_example_rule_file_validates_on_its_own(
    rule_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every example rule file (one per target, plus chains) passes `bridge validate` alone."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/app")
    monkeypatch.setenv("FRAGMENT_TOKEN", "example")
    config = (ROOT / "bridge.example.yaml").read_text()
    (tmp_path / "bridge.yaml").write_text(config.replace("rules: rules/", f"rules: {rule_file}"))
    assert main(["validate", "-c", str(tmp_path / "bridge.yaml")]) == 0
