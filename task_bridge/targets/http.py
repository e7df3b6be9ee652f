"""The one place that knows httpx's exceptions and HTTP status codes, and the HTTP target base.

Foreign errors are translated once, here, into `task_bridge.errors`: `classify` decides for every
target (batch items included) what a status means: transient ones retry, a transient one with
`Retry-After` becomes the `RetryAfter` signal, the rest are permanent. Messages never carry
request headers (the token lives there, G8).

`HttpTarget` owns what every HTTP target repeats: the base URL, auth headers, User-Agent, JSON
encoding, the request and its error mapping, and the optional members' defaults.
"""

from __future__ import annotations

import email.utils
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Final

import httpx
from pydantic import BaseModel, ConfigDict

from task_bridge.durations import Duration, Rate
from task_bridge.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryAfter,
    TransientDeliveryError,
)
from task_bridge.jsonenc import PayloadError, dumps_payload
from task_bridge.redaction import Redactor, credential_values
from task_bridge.targets.base import TargetBase, TargetDeps

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
BODY_EXCERPT_CHARS = 300
_READ = httpx.ByteStream(b"")


def release(response: httpx.Response) -> httpx.Response:
    """Break the reference cycle between a read response and its stream wrapper.

    httpx 0.28 wraps each body in a stream that points back at the response
    (encode/httpx#3733), so every response, with its request, headers and httpcore objects
    (about 45 objects), waits for the cyclic garbage collector. At 100 requests/s that was a
    10-20 ms collection every 2-3 s on the event loop, in the middle of deliveries. The body
    is already in `response.content`; the stream is never read again.
    """
    if response.is_closed:
        response.stream = _READ
    return response


class TargetConfigBase(BaseModel):
    """Keys every target takes, and what `validate` asks of an action of this target."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: str
    """Which API this is: picks the target's other keys."""
    base_url: str
    """The API's base URL (no trailing slash needed)."""
    rate_limit: Rate | None = None
    """Pace requests to this target (e.g. `60/min`; one token per request, shared by all
    workers) instead of collecting 429s. None: no pacing."""
    timeout: Duration | None = None
    """Per-request timeout for this target (None: `delivery.timeout`)."""

    OPS: ClassVar[frozenset[str]] = frozenset()
    """The ops a rule may send to this kind of target."""
    UNSUPPORTED_NOTE: ClassVar[str] = ""
    """Said after "does not support op ...", e.g. why the API cannot."""

    @property
    def supported_ops(self) -> frozenset[str]:
        return self.OPS

    @property
    def unsupported_note(self) -> str:
        return self.UNSUPPORTED_NOTE

    def check_action(self, op: str, task: dict[str, Any]) -> list[str]:
        """Problems with one action's `task` (`task.key: message`); empty = fine."""
        return []


def user_agent() -> str:
    """`task-bridge/<installed version>` (`dev` when running from a source tree)."""
    try:
        return f"task-bridge/{version('task-bridge')}"
    except PackageNotFoundError:
        return "task-bridge/dev"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _excerpt(response: httpx.Response) -> str:
    """The start of an error body, with the request's credentials masked first (a gateway
    may echo the request headers; cut first, a token could be left in part)."""
    text = Redactor(credential_values(response.request.headers))(response.text)
    text = text.strip().replace("\n", " ")
    return text[:BODY_EXCERPT_CHARS] + ("..." if len(text) > BODY_EXCERPT_CHARS else "")


def classify(status: int, retry_after: float | None, message: str) -> DeliveryError | None:
    """What an HTTP status means for delivery: None for 2xx; a 5xx, 408, 409, 425 or 429 is
    transient (`RetryAfter` when the answer said when); anything else is permanent."""
    if 200 <= status < 300:
        return None
    if status >= 500 or status in TRANSIENT_STATUSES:
        if retry_after is not None:
            return RetryAfter(retry_after, message, http_status=status)
        return TransientDeliveryError(message, http_status=status)
    return PermanentDeliveryError(message, http_status=status)


def check_response(response: httpx.Response) -> httpx.Response:
    """2xx -> the response; anything else -> the matching delivery error."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    where = f"{response.request.method} {response.request.url.path}"
    message = f"HTTP {status} from {where}: {_excerpt(response)}".rstrip(": ")
    error = classify(status, parse_retry_after(response.headers.get("retry-after")), message)
    assert error is not None
    raise error


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    content: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> httpx.Response:
    """Send one request; translate transport errors and statuses into delivery errors."""
    try:
        parsed = httpx.URL(url)  # parsed once: httpx reuses a URL object as it is
    except httpx.InvalidURL as exc:
        raise PermanentDeliveryError(f"{method}: bad target URL: {exc}") from exc
    where = f"{method} {parsed.path}"
    try:
        response = await client.request(
            method,
            parsed,
            content=content,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise PermanentDeliveryError(f"{where}: bad target URL: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError(f"{where}: timed out ({type(exc).__name__})") from exc
    except httpx.RequestError as exc:
        raise TransientDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return check_response(release(response))


def json_body(response: httpx.Response) -> Any:
    """The response's JSON body, or None when it has none (kept for chain steps)."""
    if not response.content:
        return None
    try:
        return response.json()  # not orjson: it turns integers over 64 bits into floats
    except ValueError:
        return None


def encode_body(body: Any) -> str:
    """A request body as JSON; a value JSON cannot carry is a permanent error of this op."""
    try:
        return dumps_payload(body)
    except PayloadError as exc:
        raise PermanentDeliveryError(f"payload cannot be encoded: {exc}") from exc


NO_BODY: Final = object()


class HttpTarget(TargetBase):
    """Base of the HTTP targets: `self.base_url` (no trailing slash), `self.headers` (JSON
    content type, User-Agent, and `auth_headers()`), and `call()` for one request."""

    def __init__(self, name: str, config: TargetConfigBase, deps: TargetDeps) -> None:
        super().__init__(name)
        self.config = config
        self.client = deps.client
        self.store = deps.store
        self.log = deps.logger
        self.base_url = config.base_url.rstrip("/")
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": user_agent(),
            **self.auth_headers(),
        }

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate every request (none by default)."""
        return {}

    def __repr__(self) -> str:  # never the headers: the token lives there
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    def url(self, path: str) -> str:
        """`path` under the base URL (an absolute URL is used as is)."""
        return path if "://" in path else f"{self.base_url}{path}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = NO_BODY,
        *,
        content: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request: `body` is encoded as JSON (or `content` sent as is); a non-2xx answer
        or a transport error raises the matching delivery error."""
        if body is not NO_BODY:
            content = encode_body(body)
        return await request(
            self.client,
            method,
            self.url(path),
            content=content,
            headers=self.headers if headers is None else {**self.headers, **headers},
            timeout=self.config.timeout,
        )


class SyncHttp:
    """A small blocking client for pollers running in their own thread (errors translated
    like `request`'s)."""

    def __init__(self, headers: dict[str, str], timeout: float) -> None:
        self._client = httpx.Client(
            headers={**headers, "User-Agent": user_agent()}, timeout=timeout
        )

    def get_json(self, url: str, params: dict[str, Any]) -> Any:
        try:
            response = self._client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(f"GET {url}: timed out") from exc
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        return json_body(check_response(release(response)))

    def close(self) -> None:
        self._client.close()
