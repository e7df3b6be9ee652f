"""Secrets out of everything the bridge stores or prints (G8).

`secret_values(config)` walks the whole typed config: every `SecretStr` (target tokens and
passwords, the source DSN, the outbox URL), the password inside a DSN or URL, and values of
free-form mappings (`http` target headers, Kafka `client` options) whose key names a
credential. A `Redactor` replaces each of them with `***` in text, or in every string of a
JSON-like value: log lines, `last_error`, a step's stored response, CLI output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_CHARS = 4
"""Shorter values are not masked (masking `pw` would garble every other word)."""

_CREDENTIAL_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authori[sz]ation|api[-_]?key|cookie|credential", re.I
)
_KEYWORD_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def secret_values(value: Any) -> Iterator[str]:
    """Every secret value inside `value` (a config model or any part of it)."""
    if isinstance(value, SecretStr):
        yield from _with_parts(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_values(getattr(value, name))
    elif isinstance(value, Mapping):
        strings = {str(k): v for k, v in value.items() if isinstance(v, str)}
        yield from credential_values(strings)
        for v in value.values():
            if not isinstance(v, str):
                yield from secret_values(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secret_values(item)


def credential_values(headers: Mapping[str, str]) -> Iterator[str]:
    """The values of the headers (or options) whose name says they carry a credential."""
    for name, value in headers.items():
        if _CREDENTIAL_KEY.search(name):
            yield from _with_parts(value)


def _with_parts(secret: str) -> Iterator[str]:
    """A DSN's or URL's password (the rest of it is not secret: hosts and paths stay legible),
    or the value itself and the last word of `Bearer <token>`-like values."""
    if not secret:
        return
    match = _KEYWORD_PASSWORD.search(secret)
    if match:
        yield match.group(1).strip("'")
    if "://" in secret:
        try:
            password = urlsplit(secret).password
        except ValueError:
            password = None
        if password:
            yield password
            yield unquote(password)
    if match or "://" in secret:
        return
    yield secret
    words = secret.split()
    if len(words) > 1:
        yield words[-1]


class Redactor:
    """Replaces known secret values with `***` (longest first, so no secret is left half)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """`value` with every string in it redacted (dicts, lists; other types as they are)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
