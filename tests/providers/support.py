"""Helpers for the provider contract tests: mock transports, requests and SSE bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from gateway.providers import adapter_for
from gateway.providers.base import ChatRequest, ProviderAdapter, ProviderConfig, StreamResult

SECRET = "sk-test-0123456789abcdef"
HELLO = [{"role": "user", "content": "Say hello"}]

ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 7,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 20,
}
ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
}

Handler = Callable[[httpx.Request], httpx.Response]


def config(kind: str, base_url: str = "https://upstream.test/v1", **fields: Any) -> ProviderConfig:
    return ProviderConfig(
        name=f"test-{kind}",
        kind=kind,
        base_url=base_url,
        api_key=fields.pop("api_key", SECRET),
        **fields,
    )


def adapter(kind: str, handler: Handler, **fields: Any) -> ProviderAdapter:
    """An adapter whose client answers every request with `handler` (no network)."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return adapter_for(config(kind, **fields), client)


def recording(
    response: httpx.Response | Callable[[], httpx.Response], seen: list[httpx.Request]
) -> Handler:
    """A handler that records each request and answers `response`."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response() if callable(response) else response

    return handle


def chat(messages: list[dict[str, Any]] | None = None, **body: Any) -> ChatRequest:
    return ChatRequest(
        body={"model": "client-model", "messages": messages or HELLO, **body},
        upstream_model="upstream-model",
    )


def sent_json(request: httpx.Request) -> Any:
    return orjson.loads(request.content)


def sse_response(*frames: bytes, then: Exception | None = None) -> httpx.Response:
    """A 200 event stream of `frames`; `then` is raised after them (a dropped connection)."""

    async def body() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame
        if then is not None:
            raise then

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\n" + data(payload)


def raises(exc: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


async def drain(adapter: ProviderAdapter, request: ChatRequest) -> tuple[list[dict], StreamResult]:
    result = StreamResult()
    chunks = [chunk async for chunk in adapter.stream(request, result)]
    return chunks, result


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
