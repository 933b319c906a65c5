"""The provider contract: one small async interface every adapter implements.

An adapter only translates: a normalized `ChatRequest` into the provider's wire format, the
provider's answer back into an OpenAI-shaped `Completion` (or a stream of OpenAI-shaped chunk
dicts ending in a `Usage`), and the provider's failures into one `ProviderError`.
Routing, fallback, caching, budgets and pricing live elsewhere and never look at the kind.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import orjson

from gateway.fastpath import transport
from gateway.providers.answers import check_chunk, check_completion
from gateway.providers.errors import (
    RETRYABLE_STATUSES,
    ProviderError,
    error_from_exception,
    error_from_response,
    parsed_url,
    public_reason,
    stream_cut,
)
from gateway.providers.sse import (
    MAX_RESPONSE_BYTES,
    MAX_STREAM_BYTES,
    sse_events,
    until_body_ends,
)

# Re-exported: the adapters and the pipeline import the contract from here.
__all__ = [
    "RETRYABLE_STATUSES",
    "ChatRequest",
    "Completion",
    "ProviderAdapter",
    "ProviderConfig",
    "ProviderError",
    "StreamResult",
    "Usage",
    "bad_usage",
    "check_chunk",
    "check_completion",
    "error_from_exception",
    "error_from_response",
    "public_reason",
    "stream_cut",
    "usage_problem",
]


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What an adapter needs to know about its Provider row (a snapshot, no ORM)."""

    name: str
    kind: str
    base_url: str
    api_key: str  # resolved from the environment variable the Provider names; may be ""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)
    # Why the key may not be used (api_key_env refused by gateway/keyvars.py): then no call
    # is sent at all.
    key_error: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"ProviderConfig(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


# The key under which a natively passed-through stream's chunks carry the provider's own
# event (an event with no chat equivalent rides on a chunk with no choices).
NATIVE_EVENT = "native_event"


@dataclass(slots=True)
class Native:
    """A client's request in one provider kind's own format (an Anthropic Messages body sent
    to /v1/messages), passed through as it came to a model of that kind: the adapter sets
    only the model, the output cap and `stream`, and sends `headers` (e.g. anthropic-beta).

    `only` lists what in it no other kind can serve, as (parameter, why): a model of
    another kind refuses the request (or is skipped in a fallback chain) naming the first.
    """

    kind: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    only: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ChatRequest:
    """A validated OpenAI chat request. `body` is the client's JSON, minus gateway-only fields.

    The adapter sends `upstream_model` instead of `body["model"]`. `output_cap` is set when
    the client sent no max tokens and the gateway caps the answer: each adapter sends it
    under its provider's name for the parameter.
    """

    body: dict[str, Any]
    upstream_model: str = ""
    output_cap: int | None = None
    # The most tokens (prompt + output) the model can account for: its context window plus
    # its max output (see `usage_problem`). 0: unknown, the absolute ceiling applies.
    usage_ceiling: int = 0
    # The client's own request, for an adapter of its kind to send instead of `body`'s
    # translation (`body` is still what the pipeline reads: estimates, cache, ledger).
    native: Native | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @property
    def max_tokens(self) -> int | None:
        """The client's max tokens, else the gateway's output cap, else None."""
        return (
            self.body.get("max_completion_tokens") or self.body.get("max_tokens") or self.output_cap
        )


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them, normalized.

    `input_tokens` counts every prompt token, including the cached and cache-written ones
    (OpenAI's `prompt_tokens`; for Anthropic input_tokens + cache_read + cache_creation).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reported: bool = True  # False when the provider gave no usage and it was estimated


def prompt_details(usage: Usage) -> dict[str, int]:
    """`prompt_tokens_details` of the usage a client reads: the cache reads, and the cache
    writes when there were any (`cache_write_tokens`, as the Responses API names them; chat's
    schema has no such count, and OpenAI bills no cache write of its own)."""
    details = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return details


MAX_USAGE_TOKENS = 10_000_000
"""The absolute ceiling of a usage count, and of prompt + output when a model's limits are not
known: no model today accounts for more than a few million tokens in one call."""


def token_count(raw: Any, name: str) -> int:
    """One count of a provider's usage object: a non-negative integer (absent or null: 0).

    Anything else (a string, a fraction, a boolean, a negative or absurd number) raises
    ValueError, which the adapters map to a retryable `bad_response`: it is never billed.
    """
    value = raw.get(name)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"usage {name} is not an integer")
    if value < 0:
        raise ValueError(f"usage {name} is negative")
    if value > MAX_USAGE_TOKENS:
        raise ValueError(f"usage {name} is beyond {MAX_USAGE_TOKENS}")
    return value


def asked(body: dict[str, Any], name: str) -> bool:
    """Whether a request asks for `name`: present, and not null, false or {"type": "text"}."""
    value = body.get(name)
    if name == "response_format":
        return isinstance(value, dict) and value.get("type") != "text"
    return value is not None and value is not False


def usage_problem(usage: Usage | None, ceiling: int) -> str | None:
    """Why a provider's reported usage cannot be billed, or None when it can.

    `ceiling` is the model's context window plus its max output (0: unknown, then
    MAX_USAGE_TOKENS): a call cannot account for more prompt and output tokens than that.
    """
    if usage is None or not usage.reported:
        return None
    counts = (usage.input_tokens, usage.output_tokens, usage.cached_tokens)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        return "usage counts that are not non-negative integers"
    if usage.cache_write_tokens < 0 or usage.cached_tokens + usage.cache_write_tokens > max(
        usage.input_tokens, 0
    ):
        return "more cached prompt tokens than prompt tokens"
    limit = min(ceiling, MAX_USAGE_TOKENS) if ceiling > 0 else MAX_USAGE_TOKENS
    if usage.input_tokens + usage.output_tokens > limit:
        return (
            f"{usage.input_tokens} prompt + {usage.output_tokens} output tokens, beyond the "
            f"model's {limit}"
        )
    return None


def bad_usage(provider: str, problem: str) -> ProviderError:
    return ProviderError(
        f"{provider}: usage not billable: {problem}", retryable=True, kind="bad_response"
    )


@dataclass(slots=True)
class Completion:
    """A whole non-streamed answer in OpenAI's chat.completion shape (`body`), with its usage,
    and (`native`) the provider's own answer when the request was passed through natively."""

    body: dict[str, Any]
    usage: Usage
    native: dict[str, Any] | None = None


class StreamResult:
    """Filled in by an adapter's stream as it goes: the final usage once the stream ends."""

    __slots__ = ("usage", "finish_reason", "details")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        # The upstream usage's `*_details` objects (completion_tokens_details, ...), passed
        # on to the client's usage chunk as they came.
        self.details: dict[str, Any] = {}


USER_AGENT = "llm-gateway"


DONE: Any = object()
"""Yielded by `ProviderAdapter.sse` for OpenAI's `data: [DONE]` terminator."""


class ProviderAdapter(abc.ABC):
    """The adapter protocol. Subclasses set `kind` and implement `complete` and `stream`.

    - `complete` returns a `Completion` or raises `ProviderError`.
    - `stream` is an async generator of OpenAI `chat.completion.chunk` dicts (never a
      usage-only chunk). It returns normally only after the provider said the answer is
      complete, having set `result.usage` (None when the provider reported none) and
      `result.finish_reason`; any other ending raises `ProviderError` (a cut stream raises
      kind "stream_cut"). Before the first chunk is yielded the gateway may still fall back.
      Close it with `contextlib.aclosing` when abandoning it early, to free the connection.

    The helpers below (`post_json`, `sse`) do the HTTP and map every failure exactly once.
    """

    __slots__ = ("config", "client")

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""  # what the admin shows for the kind
    default_base_url: ClassVar[str] = ""
    # The named SSE events after which this provider's answer is complete (OpenAI-style
    # streams end with `data: [DONE]`, which `sse` always knows); `sse` then reads on only
    # until the body ends, so the connection goes back to the pool.
    final_events: ClassVar[frozenset[str]] = frozenset()
    # Whether `embed` is implemented (gateway/providers/embeddings.py): /v1/embeddings skips
    # a model whose provider does not serve them.
    serves_embeddings: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client

    def refusals(self, body: dict[str, Any]) -> dict[str, str]:
        """What in an OpenAI chat body this provider cannot honour, as {parameter: phrase}
        (phrase "" means " is not supported"; see services.refusal_message). The gateway
        then skips the model in a fallback chain, or answers a 400 when no model can serve:
        a parameter is never silently dropped. Default: everything is honoured."""
        return {}

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """Send one non-streamed request; return the OpenAI-shaped answer and its usage."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest, result: StreamResult) -> AsyncIterator[dict[str, Any]]:
        """Send one streamed request; yield OpenAI chunk dicts and fill `result`."""

    async def embed(self, request: Any) -> Any:
        """Embed `request` (an EmbeddingRequest); return `Embeddings`. Only when
        `serves_embeddings` is set."""
        raise NotImplementedError

    def url(self, path: str) -> str:
        base = (self.config.base_url or self.default_base_url).rstrip("/")
        if not base:
            raise ProviderError(
                f"{self.config.name}: no base URL configured", retryable=True, kind="provider_error"
            )
        return base + path

    async def _send(
        self, url: str, body: dict[str, Any], headers: dict[str, str], *, accept: str
    ) -> httpx.Response:
        """POST `body` as JSON; the response with its body not read yet.

        By `gateway.fastpath.transport.send`: straight to the client's transport, since an
        upstream call needs none of what the client adds around it (default-header and URL
        merging, cookies, auth flows, redirects, event hooks), which cost as much CPU as the
        HTTP exchange itself (0.70 vs 0.39 ms per call measured against the bench mock). The
        transport is the one the client would pick for this URL, so a test's
        `httpx.MockTransport` or a mounted proxy still applies.
        """
        if self.config.key_error:
            raise ProviderError(self.config.key_error, retryable=True, kind="auth_error")
        request = httpx.Request(
            "POST",
            parsed_url(url),
            headers={
                **headers,
                "content-type": "application/json",
                "accept": accept,
                "user-agent": USER_AGENT,
            },
            content=orjson.dumps(body),
            extensions={"timeout": self._timeouts()},
        )
        return await transport.send(self.client, request)

    def _timeouts(self) -> dict[str, float]:
        c = self.config
        return {
            "connect": c.connect_timeout,
            "read": c.read_timeout,
            "write": c.read_timeout,
            "pool": c.connect_timeout,
        }

    def fail(self, exc: Exception) -> ProviderError:
        """Map an exception raised while talking to or parsing this provider."""
        return error_from_exception(self.config.name, exc)

    def _cap(self, option: str, default: int) -> int:
        value = self.config.options.get(option)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return default

    def too_large(self, what: str, limit: int) -> ProviderError:
        return ProviderError(
            f"{self.config.name}: {what} is larger than {limit} bytes",
            retryable=True,
            reason="upstream answer too large",
            kind="bad_response",
        )

    def error_from(self, resp: httpx.Response, content: bytes) -> ProviderError:
        return error_from_response(
            self.config.name,
            resp.status_code,
            content.decode("utf-8", "replace"),
            resp.headers,
            secret=self.config.api_key,
            base_url=self.config.base_url or self.default_base_url,
        )

    async def _read_capped(self, resp: httpx.Response, limit: int) -> bytes:
        """The body, decoded (gzip...), or a bad_response once it passes `limit` bytes."""
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self.too_large("the answer", limit)
        parts, size = [], 0
        async for part in resp.aiter_bytes():
            size += len(part)
            if size > limit:
                raise self.too_large("the answer", limit)
            parts.append(part)
        return b"".join(parts)

    async def post_json(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """POST a JSON body and return the parsed JSON answer (any 2xx), else raise.

        The body is read up to the provider's `max_response_bytes` option (default
        MAX_RESPONSE_BYTES); a larger one is a retryable `bad_response`."""
        limit = self._cap("max_response_bytes", MAX_RESPONSE_BYTES)
        try:
            resp = await self._send(url, body, headers, accept="application/json")
            try:
                content = await self._read_capped(resp, limit)
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise self.fail(exc) from exc
        if not resp.is_success:
            raise self.error_from(resp, content)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise self.fail(exc) from exc

    async def sse(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncGenerator[tuple[str, Any]]:
        """POST a JSON body and yield the answer's server-sent events as (event, JSON data).

        `data: [DONE]` is yielded as `DONE`. An event cut off by the end of the stream is
        dropped (as the SSE spec says), so the adapter sees that its terminator is missing.
        """
        name = self.config.name
        try:
            resp = await self._send(url, body, headers, accept="text/event-stream")
        except httpx.HTTPError as exc:
            raise self.fail(exc) from exc
        try:
            if not resp.is_success:
                limit = self._cap("max_response_bytes", MAX_RESPONSE_BYTES)
                raise self.error_from(resp, await self._read_capped(resp, limit))
            limit = self._cap("max_stream_bytes", MAX_STREAM_BYTES)
            events = sse_events(resp, limit, lambda: self.too_large("the stream", limit))
            async for event, data in events:
                if data == b"[DONE]" or event in self.final_events:
                    await until_body_ends(events)
                try:
                    yield event, (DONE if data == b"[DONE]" else orjson.loads(data))
                except orjson.JSONDecodeError as exc:
                    raise self.fail(exc) from exc
        except httpx.TimeoutException as exc:
            raise self.fail(exc) from exc
        except httpx.TransportError as exc:  # the connection dropped after the answer began
            raise stream_cut(name, type(exc).__name__) from exc
        finally:
            await resp.aclose()
