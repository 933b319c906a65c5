"""The provider contract: one small async interface every adapter implements.

An adapter only translates: a normalized `ChatRequest` into the provider's wire format, the
provider's answer back into an OpenAI-shaped `Completion` (or a stream of OpenAI-shaped chunk
dicts ending in a `Usage`), and the provider's failures into one `ProviderError`.
Routing, fallback, caching, budgets and pricing live elsewhere and never look at the kind.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx


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

    def __repr__(self) -> str:  # never print the secret
        return f"ProviderConfig(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


@dataclass(slots=True)
class ChatRequest:
    """A validated OpenAI chat request. `body` is the client's JSON, minus gateway-only fields.

    The adapter sends `upstream_model` instead of `body["model"]`.
    """

    body: dict[str, Any]
    upstream_model: str = ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @property
    def max_tokens(self) -> int | None:
        return self.body.get("max_completion_tokens") or self.body.get("max_tokens")


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


@dataclass(slots=True)
class Completion:
    """A whole non-streamed answer in OpenAI's chat.completion shape (`body`), with its usage."""

    body: dict[str, Any]
    usage: Usage


class ProviderError(Exception):
    """Every failure of a provider call, mapped once (see `error_from_response`).

    `retryable` failures move the request to the next model in the chain; the others are the
    caller's own fault and are returned to it as they are.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        kind: str = "provider_error",
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.kind = kind  # timeout, connection_error, rate_limited, overloaded, server_error,
        #                    bad_response, invalid_request, auth_error, stream_cut
        self.body = body
        self.retry_after = retry_after


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_STATUS_KINDS = {429: "rate_limited", 529: "overloaded", 401: "auth_error", 403: "auth_error"}


def error_from_response(provider: str, status: int, text: str, headers: httpx.Headers | None = None) -> ProviderError:
    """Map an HTTP error answer from any provider to a ProviderError."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    detail = _error_message(body) or text[:200] or f"HTTP {status}"
    retry_after = None
    if headers is not None and headers.get("retry-after"):
        try:
            retry_after = float(headers["retry-after"])
        except ValueError:
            retry_after = None
    # A provider answering 401/403 means *our* key is wrong: that is not the caller's fault,
    # so another provider may still serve the request.
    retryable = status in RETRYABLE_STATUSES or status >= 500 or status in (401, 403)
    kind = _STATUS_KINDS.get(status, "server_error" if status >= 500 else "invalid_request")
    return ProviderError(
        f"{provider}: HTTP {status}: {detail}",
        retryable=retryable, status=status, kind=kind,
        body=body if isinstance(body, dict) else None, retry_after=retry_after,
    )


def error_from_exception(provider: str, exc: Exception) -> ProviderError:
    """Map a transport exception (timeout, refused connection, bad body) to a ProviderError."""
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(f"{provider}: timed out ({type(exc).__name__})", retryable=True, kind="timeout")
    if isinstance(exc, httpx.TransportError):
        return ProviderError(f"{provider}: connection error ({type(exc).__name__})", retryable=True,
                             kind="connection_error")
    if isinstance(exc, (ValueError, KeyError, TypeError, IndexError)):
        return ProviderError(f"{provider}: malformed response ({type(exc).__name__})", retryable=True,
                             kind="bad_response")
    return ProviderError(f"{provider}: {type(exc).__name__}", retryable=True, kind="provider_error")


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or "")
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return body["message"]
    return ""


class StreamResult:
    """Filled in by an adapter's stream as it goes: the final usage once the stream ends."""

    __slots__ = ("usage", "finish_reason")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None


class ProviderAdapter:
    """Base class of the adapters. Subclasses set `kind` and implement the two methods.

    - `complete` returns a `Completion` or raises `ProviderError`.
    - `stream` is an async generator of OpenAI `chat.completion.chunk` dicts (without the
      `usage` chunk); it fills `result.usage` before it ends. Any failure raises
      `ProviderError`; before the first chunk is yielded the gateway may still fall back.
    """

    kind: ClassVar[str] = ""

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client

    def timeout(self) -> httpx.Timeout:
        c = self.config
        return httpx.Timeout(connect=c.connect_timeout, read=c.read_timeout, write=c.read_timeout,
                             pool=c.connect_timeout)

    async def complete(self, request: ChatRequest) -> Completion:
        raise NotImplementedError

    def stream(self, request: ChatRequest, result: StreamResult) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError
