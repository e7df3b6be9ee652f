"""`bridge validate` and config errors: one `file:line: message` per problem, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = """source:
  postgres:
    dsn: postgresql://localhost/db
targets:
  fragment:
    kind: fragment
    base_url: http://127.0.0.1:9/api/v1
    token: ${FRAGMENT_TOKEN:-dummy}
rules: rules/
"""

BROKEN = {
    "a_syntax.yaml": "rules:\n  - name: broken\n    table: [public.orders\n",
    "b_unknown_key.yaml": (
        "rules:\n  - name: typo\n    table: public.orders\n    actions:\n"
        '      - op: upsert\n        target: fragment\n        uidd: "x"\n'
    ),
    "c_unknown_target.yaml": (
        "rules:\n  - name: target\n    table: public.orders\n    actions:\n"
        '      - {op: upsert, target: fragmnet, uid: "x"}\n'
    ),
    "d_bad_template.yaml": (
        "rules:\n  - name: template\n    table: public.orders\n    actions:\n"
        '      - op: upsert\n        target: fragment\n        uid: "order-{{ after.id "\n'
    ),
    "e_dup_one.yaml": (
        "rules:\n  - name: twice\n    table: public.orders\n    actions:\n"
        '      - {op: close, target: fragment, uid: "a"}\n'
    ),
    "f_dup_two.yaml": (
        "rules:\n  - {name: ok, table: public.orders, actions: []}\n"
        "  - name: twice\n    table: public.orders\n    actions:\n"
        '      - {op: close, target: fragment, uid: "b"}\n'
    ),
}


def _validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "task_bridge", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
    )


def test_validate_reports_each_broken_rule_file_with_file_and_line(tmp_path: Path) -> None:
    """Syntax error, unknown key, unknown target, bad template and duplicate name: one line each."""
    (tmp_path / "rules").mkdir()
    for name, text in BROKEN.items():
        (tmp_path / "rules" / name).write_text(text)
    (tmp_path / "bridge.yaml").write_text(CONFIG)
    result = _validate(tmp_path / "bridge.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    rules = tmp_path / "rules"
    assert len(lines) == 5, lines
    assert lines[0].startswith(f"{rules / 'a_syntax.yaml'}:4: ")
    assert lines[1].startswith(f"{rules / 'b_unknown_key.yaml'}:7: ")
    assert "uidd" in lines[1] and "did you mean 'uid'" in lines[1]
    assert lines[2].startswith(f"{rules / 'c_unknown_target.yaml'}:5: ")
    assert "fragmnet" in lines[2] and "did you mean 'fragment'" in lines[2]
    assert lines[3].startswith(f"{rules / 'd_bad_template.yaml'}:7: ")
    assert lines[4].startswith(f"{rules / 'f_dup_two.yaml'}:3: ")
    assert "twice" in lines[4] and "e_dup_one.yaml:2" in lines[4]
    assert "Traceback" not in result.stderr


def test_validate_accepts_good_rules(tmp_path: Path) -> None:
    """A valid config and rule set validates with exit 0."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ok.yaml").write_text(BROKEN["e_dup_one.yaml"])
    (tmp_path / "bridge.yaml").write_text(CONFIG)
    result = _validate(tmp_path / "bridge.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rules" in result.stdout


def test_config_errors_name_file_line_and_key_path(tmp_path: Path) -> None:
    """A typo in bridge.yaml and a missing env var are reported with file:line and key path."""
    (tmp_path / "rules").mkdir()
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.replace("base_url:", "base_ulr:"))
    result = _validate(config)
    assert result.returncode == 1
    assert f"{config}:7: targets.fragment.base_ulr: unknown key (did you mean 'base_url'?)" in (
        result.stderr
    )
    config.write_text(CONFIG.replace("${FRAGMENT_TOKEN:-dummy}", "${NOPE_NOT_SET}"))
    result = _validate(config)
    assert result.returncode == 1
    assert f"{config}:8: targets.fragment.token: environment variable NOPE_NOT_SET is not set" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
