"""The provider contract: one small async interface every adapter implements.

An adapter only translates: a normalized `ChatRequest` into the provider's wire format, the
provider's answer back into an OpenAI-shaped `Completion` (or a stream of OpenAI-shaped chunk
dicts ending in a `Usage`), and the provider's failures into one `ProviderError`.
Routing, fallback, caching, budgets and pricing live elsewhere and never look at the kind.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import httpx
import orjson

from gateway.fastpath import transport
from gateway.redaction import scrub_provider_text, scrub_provider_value


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


def _text_or_none(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} is not a string")


def _tool_calls(calls: Any, *, streamed: bool) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise TypeError("tool_calls is not a list")
    for call in calls:
        if not isinstance(call, dict):
            raise TypeError("a tool call is not an object")
        if streamed and not isinstance(call.get("index", 0), int):
            raise TypeError("a tool call's index is not an integer")
        _text_or_none(call.get("id"), "a tool call's id")
        if call.get("type") == "custom":  # a custom tool's call: free-form `input` text
            custom = call.get("custom")
            if not isinstance(custom, dict):
                raise TypeError("a custom tool call's custom is not an object")
            _text_or_none(custom.get("name"), "a custom tool call's name")
            _text_or_none(custom.get("input"), "a custom tool call's input")
            continue
        fn = call.get("function")
        if fn is None and streamed:
            continue
        if not isinstance(fn, dict):
            raise TypeError("a tool call's function is not an object")
        _text_or_none(fn.get("name"), "a tool call's name")
        _text_or_none(fn.get("arguments"), "a tool call's arguments")


def check_completion(body: Any) -> dict[str, Any]:
    """An OpenAI chat.completion as the gateway reads it, or TypeError/ValueError (which
    adapters map to a retryable `bad_response`): the shape is checked once, here, so nothing
    later (usage estimate, cache, ledger, the client's SDK) meets a surprise."""
    if not isinstance(body, dict):
        raise TypeError("the answer is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise ValueError("no choices in the answer")
    for choice in choices:
        if not isinstance(choice, dict):
            raise TypeError("a choice is not an object")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise TypeError("a choice has no message object")
        _text_or_none(message.get("content"), "a message's content")
        _tool_calls(message.get("tool_calls"), streamed=False)
        _text_or_none(choice.get("finish_reason"), "a finish_reason")
        if not isinstance(choice.get("index", 0), int):
            raise TypeError("a choice's index is not an integer")
    return body


def check_chunk(chunk: Any) -> dict[str, Any]:
    """An OpenAI chat.completion.chunk as the gateway reads it (see `check_completion`)."""
    if not isinstance(chunk, dict):
        raise TypeError("a chunk is not a JSON object")
    choices = chunk.get("choices")
    if choices is None:
        return chunk
    if not isinstance(choices, list):
        raise TypeError("a chunk's choices is not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise TypeError("a chunk's choice is not an object")
        delta = choice.get("delta")
        if delta is not None:
            if not isinstance(delta, dict):
                raise TypeError("a chunk's delta is not an object")
            _text_or_none(delta.get("content"), "a delta's content")
            _tool_calls(delta.get("tool_calls"), streamed=True)
        _text_or_none(choice.get("finish_reason"), "a finish_reason")
        if not isinstance(choice.get("index", 0), int):
            raise TypeError("a chunk choice's index is not an integer")
    return chunk


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
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # a gateway-written public reason, more precise than the kind's
        self.retryable = retryable
        self.status = status
        self.kind = kind  # timeout, connection_error, rate_limited, overloaded, server_error,
        #                    bad_response, invalid_request, auth_error, stream_cut
        self.body = body
        self.retry_after = retry_after

    @property
    def public(self) -> str:
        """What a client may read about this failure: a generic reason per kind, never the
        provider's own text (it can quote our key, name internal hosts or hold a traceback).
        A caller's-fault refusal keeps its message, already scrubbed (`error_from_response`).
        """
        if not self.retryable and self.kind == "invalid_request":
            return self.message
        return self.reason or public_reason(self.kind, self.status)


_PUBLIC_REASONS = {
    "auth_error": "upstream authentication failed",
    "rate_limited": "upstream rate limited",
    "overloaded": "upstream overloaded",
    "timeout": "upstream timed out",
    "connection_error": "upstream connection error",
    "bad_response": "upstream sent a malformed answer",
    "stream_cut": "upstream stream ended early",
}


def public_reason(kind: str, status: int | None) -> str:
    if kind in _PUBLIC_REASONS:
        return _PUBLIC_REASONS[kind]
    return f"upstream error {status}" if status else "upstream error"


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_STATUS_KINDS = {429: "rate_limited", 529: "overloaded", 401: "auth_error", 403: "auth_error"}


def error_from_response(
    provider: str,
    status: int,
    text: str,
    headers: httpx.Headers | None = None,
    *,
    secret: str = "",
    base_url: str = "",
) -> ProviderError:
    """Map an HTTP error answer from any provider to a ProviderError.

    `secret` (the provider's API key) is blanked out of the text first: some providers echo
    the key they were given. Then every string of the answer is scrubbed
    (`redaction.scrub_provider_text`: key-like fragments, URLs, internal hosts, the
    provider's own host), since the message is kept in the ledger and, for a caller's-fault
    refusal, returned to the client. Other failures reach clients only as `public`.
    """
    if secret and secret in text:
        text = text.replace(secret, "[redacted]")
    try:
        body = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        body = None
    host = _parsed(base_url).host if base_url else ""
    body = scrub_provider_value(body, host=host)
    text = scrub_provider_text(text, host=host)
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
        why = scrub_provider_text(str(exc)[:200])
        return ProviderError(
            f"{provider}: malformed response ({type(exc).__name__}: {why})",
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

    __slots__ = ("usage", "finish_reason", "details")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        # The upstream usage's `*_details` objects (completion_tokens_details, ...), passed
        # on to the client's usage chunk as they came.
        self.details: dict[str, Any] = {}


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
            events = _sse_events(resp, limit, lambda: self.too_large("the stream", limit))
            async for event, data in events:
                if data == b"[DONE]" or event in self.final_events:
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
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a provider's `max_response_bytes` option by default
MAX_STREAM_BYTES = 64 * 1024 * 1024  # a provider's `max_stream_bytes` option by default


async def _until_body_ends(events: AsyncIterator[tuple[str, bytes]]) -> None:
    """Read on after a stream's last event (`[DONE]`, or one of the adapter's
    `final_events`) until the body itself ends, for at most BODY_END_WAIT_S.

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


async def _sse_events(
    resp: httpx.Response, limit: int = 0, too_large: Any = None
) -> AsyncIterator[tuple[str, bytes]]:
    """The server-sent events of a body, as (event name, data), parsed from its bytes as they
    arrive: no text decoding or line splitting of httpx's per line, and the data goes to
    orjson as bytes. Lines end in CRLF, LF or CR (the SSE spec allows all three).
    Past `limit` bytes in all (0: no limit) raises `too_large()`."""
    buffer = b""
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if limit and size > limit:
            raise too_large()
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
