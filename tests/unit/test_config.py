"""Config loading: env expansion, durations, defaults, secrets masked, file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from task_bridge.config import load_config
from task_bridge.durations import parse_duration, parse_rate
from task_bridge.errors import ConfigError

BASE = """source:
  postgres:
    dsn: postgresql://bridge:${PGPASS}@localhost/app
targets:
  fragment:
    kind: fragment
    token: ${FRAGMENT_TOKEN}
    rate_limit: 60/min
delivery:
  timeout: 1500ms
  retry: {max_backoff: 5m, max_age: 1d}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_env_expansion_durations_and_defaults(tmp_path: Path) -> None:
    """${VAR} expands, durations and rates normalise to seconds, defaults apply."""
    loaded = load_config(
        _write(tmp_path, BASE), env={"PGPASS": "pw123", "FRAGMENT_TOKEN": "tok-xyz"}
    )
    cfg = loaded.config
    assert cfg.delivery.timeout == 1.5
    assert cfg.delivery.retry.max_backoff == 300 and cfg.delivery.retry.max_age == 86400
    assert cfg.delivery.concurrency == 32
    assert cfg.targets["fragment"].rate_limit == 1.0
    assert cfg.outbox.url.get_secret_value() == "sqlite:///outbox.db"
    assert loaded.base_dir == tmp_path.resolve()
    assert "tok-xyz" not in repr(cfg) and "pw123" not in repr(cfg)
    assert set(loaded.secrets()) == {"pw123", "tok-xyz"}


def test_default_env_value_and_missing_variable(tmp_path: Path) -> None:
    """`${VAR:-default}` falls back; a missing VAR is an error naming it, its line and key path."""
    text = BASE.replace("${PGPASS}", "${PGPASS:-fallback}")
    loaded = load_config(_write(tmp_path, text), env={"FRAGMENT_TOKEN": "t"})
    assert "fallback" in loaded.config.source.postgres.dsn.get_secret_value()  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, BASE), env={"PGPASS": "x"})
    assert str(err.value).endswith(
        "bridge.yaml:7: targets.fragment.token: environment variable FRAGMENT_TOKEN is not set"
    )


def test_unknown_and_invalid_keys_report_every_problem(tmp_path: Path) -> None:
    """Unknown keys get a did-you-mean; bad values say what is expected; all problems listed."""
    text = BASE.replace("timeout: 1500ms", "timeout: soon\n  concurency: 4")
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text), env={"PGPASS": "x", "FRAGMENT_TOKEN": "t"})
    problems = err.value.problems
    assert len(problems) == 2
    assert any(
        p.endswith(
            "bridge.yaml:10: delivery.timeout: invalid duration 'soon': use a number"
            " with ms, s, m, h or d (e.g. 10s)"
        )
        for p in problems
    )
    assert any(
        "bridge.yaml:11: delivery.concurency: unknown key (did you mean 'concurrency'?)" in p
        for p in problems
    )


def test_source_must_be_postgres_or_kafka(tmp_path: Path) -> None:
    """An empty source section is an error that says what to configure."""
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "source: {}\n"), env={})
    assert "exactly one of postgres | kafka" in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("5m", 300), ("24h", 86400), ("7d", 604800), (3, 3.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    """Durations take ms, s, m, h, d."""
    assert parse_duration(text) == seconds


def test_parse_rate_and_errors() -> None:
    """Rates normalise to per-second; nonsense is rejected with a hint."""
    assert parse_rate("60/min") == 1.0
    assert parse_rate("5/s") == 5.0
    with pytest.raises(ValueError, match="60/min"):
        parse_rate("fast")
    with pytest.raises(ValueError, match="10s"):
        parse_duration("ten seconds")
