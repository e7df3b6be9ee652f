"""Property-based tests (hypothesis): the decoder, the rule loader and the retry policy hold
their contracts for any input, not only the inputs we thought of."""

from __future__ import annotations

import contextlib
import random
import struct
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from task_bridge.errors import BridgeError
from task_bridge.retry import RetryPolicy
from task_bridge.rules import load_rules
from task_bridge.sources.postgres.pgoutput import PgOutputDecoder

# A Relation message for OID 16384 `public.t (id int4, v text)`, so changes after it decode
RELATION = (
    b"R"
    + struct.pack(">I", 16384)
    + b"public\0t\0"
    + b"d"
    + struct.pack(">h", 2)
    + b"\1id\0"
    + struct.pack(">Ii", 23, -1)
    + b"\0v\0"
    + struct.pack(">Ii", 25, -1)
)
MESSAGE_KINDS = b"BCIUDTRYOM"


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(list(MESSAGE_KINDS)),
    body=st.binary(max_size=64),
    after_relation=st.booleans(),
)
def test_the_pgoutput_decoder_raises_only_its_own_errors(
    kind: int, body: bytes, after_relation: bool
) -> None:
    """Any bytes after any message kind: items, or a `BridgeError` (`SourceError`), never a
    struct/index/unicode error escaping from the decoder."""
    decoder = PgOutputDecoder()
    if after_relation:
        decoder.decode(RELATION)
    with contextlib.suppress(BridgeError):
        decoder.decode(bytes([kind]) + body)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_yaml_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "table",
                    "on",
                    "when",
                    "actions",
                    "op",
                    "target",
                    "uid",
                    "task",
                    "id",
                    "on_error",
                    "fields",
                    "x",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


class _Target:
    supported_ops = frozenset({"create", "upsert", "update", "close"})

    def check_action(self, op: str, task: dict[str, object]) -> list[str]:
        return []


def _load(text: str) -> None:
    """A rule file holding `text`, loaded the way `validate` and `run` load it."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rules.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        load_rules(
            "rules.yaml",
            base_dir=Path(tmp),
            config_file="bridge.yaml",
            config_doc=None,
            targets={"fragment": _Target()},
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_yaml_values)
def test_the_rule_loader_answers_any_yaml_value_with_problems_not_tracebacks(
    value: object,
) -> None:
    """Any YAML document of rules (well-formed YAML, any shape): loaded, or a `RuleError` /
    `ConfigError` with file:line problems; nothing else escapes."""
    try:
        _load(yaml.safe_dump({"rules": value}))
    except BridgeError as exc:
        assert str(exc).startswith("rules.yaml:") or "rules.yaml" in str(exc), str(exc)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_the_rule_loader_answers_any_text_with_problems_not_tracebacks(text: str) -> None:
    """Any text at all as a rule file: a YAML or rule problem, never another exception."""
    with contextlib.suppress(BridgeError):
        _load(text)


@given(
    attempts=st.integers(min_value=1, max_value=200),
    initial=st.floats(min_value=0.001, max_value=10),
    max_backoff=st.floats(min_value=0.01, max_value=3600),
    retry_after=st.none() | st.floats(min_value=0, max_value=7200),
    seed=st.integers(),
)
def test_retry_delays_stay_in_their_window(
    attempts: int, initial: float, max_backoff: float, retry_after: float | None, seed: int
) -> None:
    """A delay is within [0, window] (window <= max_backoff, never shrinking as attempts
    grow), except that a Retry-After is a floor; past max_attempts or max_age: give up."""
    policy = RetryPolicy(
        max_attempts=1000, initial_backoff=initial, max_backoff=max_backoff, max_age=1e9
    )
    window = policy.window(attempts)
    assert 0 <= window <= max_backoff
    assert policy.window(attempts + 1) >= window
    delay = policy.decide(attempts, 0.0, 1.0, retry_after, random.Random(seed))
    assert delay is not None and delay >= 0
    if retry_after is None:
        assert delay <= window
    else:
        assert delay >= retry_after and delay <= max(window, retry_after)
    assert RetryPolicy(max_attempts=attempts).decide(attempts, 0, 1, None, random.Random()) is None
    assert RetryPolicy(max_age=5).decide(1, 0.0, 5.0, None, random.Random()) is None
