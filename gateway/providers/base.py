"""The provider contract: one small async interface every adapter implements.

An adapter only translates: a normalized `ChatRequest` into the provider's wire format, the
provider's answer back into an OpenAI-shaped `Completion` (or a stream of OpenAI-shaped chunk
dicts ending in a `Usage`), and the provider's failures into one `ProviderError`.
Routing, fallback, caching, budgets and pricing live elsewhere and never look at the kind.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import httpx
import orjson


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

    The adapter sends `upstream_model` instead of `body["model"]`. `output_cap` is set when
    the client sent no max tokens and the gateway caps the answer: each adapter sends it
    under its provider's name for the parameter.
    """

    body: dict[str, Any]
    upstream_model: str = ""
    output_cap: int | None = None

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


def error_from_response(
    provider: str, status: int, text: str, headers: httpx.Headers | None = None, *, secret: str = ""
) -> ProviderError:
    """Map an HTTP error answer from any provider to a ProviderError.

    `secret` (the provider's API key) is blanked out of the text first: some providers echo
    the key they were given, and the error may end up in a log line or a client's answer.
    """
    if secret and secret in text:
        text = text.replace(secret, "[redacted]")
    try:
        body = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
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
        retryable=retryable,
        status=status,
        kind=kind,
        body=body if isinstance(body, dict) else None,
        retry_after=retry_after,
    )


def error_from_exception(provider: str, exc: Exception) -> ProviderError:
    """Map a transport exception (timeout, refused connection, bad body) to a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(
            f"{provider}: timed out ({type(exc).__name__})", retryable=True, kind="timeout"
        )
    if isinstance(exc, httpx.TransportError):
        return ProviderError(
            f"{provider}: connection error ({type(exc).__name__})",
            retryable=True,
            kind="connection_error",
        )
    if isinstance(exc, (ValueError, KeyError, TypeError, IndexError, AttributeError)):
        return ProviderError(
            f"{provider}: malformed response ({type(exc).__name__})",
            retryable=True,
            kind="bad_response",
        )
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


USER_AGENT = "llm-gateway"


@lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """Provider URLs are few and fixed: parse each once (httpx.URL is immutable)."""
    return httpx.URL(url)


DONE: Any = object()
"""Yielded by `ProviderAdapter.sse` for OpenAI's `data: [DONE]` terminator."""


def stream_cut(provider: str, why: str) -> ProviderError:
    """The upstream stream ended before the provider said it was complete."""
    return ProviderError(
        f"{provider}: stream ended early ({why})", retryable=True, kind="stream_cut"
    )


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
    default_base_url: ClassVar[str] = ""

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> Completion:
        """Send one non-streamed request; return the OpenAI-shaped answer and its usage."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest, result: StreamResult) -> AsyncIterator[dict[str, Any]]:
        """Send one streamed request; yield OpenAI chunk dicts and fill `result`."""

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

        Straight to the client's transport: an upstream call needs none of what the client
        adds around it (default-header and URL merging, cookies, auth flows, redirects, event
        hooks), which cost as much CPU as the HTTP exchange itself (0.70 vs 0.39 ms per call
        measured against the bench mock). The transport is the one the client would pick for
        this URL, so a test's `httpx.MockTransport` or a mounted proxy still applies.
        """
        request = httpx.Request(
            "POST",
            _parsed(url),
            headers={
                **headers,
                "content-type": "application/json",
                "accept": accept,
                "user-agent": USER_AGENT,
            },
            content=orjson.dumps(body),
            extensions={"timeout": self._timeouts()},
        )
        transport = self.client._transport_for_url(request.url)
        resp = await transport.handle_async_request(request)
        resp.request = request
        return resp

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

    async def post_json(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        """POST a JSON body and return the parsed JSON answer (any 2xx), else raise."""
        try:
            resp = await self._send(url, body, headers, accept="application/json")
            try:
                await resp.aread()
            finally:
                await resp.aclose()
        except httpx.HTTPError as exc:
            raise self.fail(exc) from exc
        if not resp.is_success:
            raise error_from_response(
                self.config.name,
                resp.status_code,
                resp.text,
                resp.headers,
                secret=self.config.api_key,
            )
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise self.fail(exc) from exc

    async def sse(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> AsyncIterator[tuple[str, Any]]:
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
                await resp.aread()
                raise error_from_response(
                    name, resp.status_code, resp.text, resp.headers, secret=self.config.api_key
                )
            events = _sse_events(resp)
            async for event, data in events:
                if data == b"[DONE]" or event == "message_stop":
                    await _until_body_ends(events)
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


BODY_END_WAIT_S = 0.1


async def _until_body_ends(events: AsyncIterator[tuple[str, bytes]]) -> None:
    """Read on after a stream's last event (OpenAI's `[DONE]`, Anthropic's `message_stop`)
    until the body itself ends, for at most BODY_END_WAIT_S.

    The adapter stops at that event, and the end of a chunked body (its empty last chunk)
    often arrives in a read of its own, a moment later. A response closed before its body
    ended cannot give its connection back to the pool, so every stream cost the next request
    a new connection: a TCP and a TLS handshake before its first token. Anything after the
    last event is ignored; a body that does not end in time is closed as before, and the
    answer, complete already, is not failed for it.
    """
    try:
        async with asyncio.timeout(BODY_END_WAIT_S):
            async for _ in events:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


async def _sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str, bytes]]:
    """The server-sent events of a body, as (event name, data), parsed from its bytes as they
    arrive: no text decoding or line splitting of httpx's per line, and the data goes to
    orjson as bytes. Lines end in CRLF, LF or CR (the SSE spec allows all three)."""
    buffer = b""
    async for chunk in resp.aiter_bytes():
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: wait for the rest
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        if b"\n\n" in buffer:
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if parsed := _sse_event(block):
                    yield parsed
    if buffer.endswith(b"\n\r"):  # the stream ended on a CR-terminated blank line
        if parsed := _sse_event(buffer[:-2]):
            yield parsed
    # Any other event the stream ended in the middle of is dropped, as the spec says.


def _sse_event(block: bytes) -> tuple[str, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # nearly every event
        return "", block[6:]
    event, data = "", []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    return (event, b"\n".join(data)) if data else None
