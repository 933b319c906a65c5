"""The one seam between the inbound formats and the chat pipeline.

`run_chat` runs a translated chat request through `services.run` as a `ChatOperation` that
names its endpoint ("messages", "responses") in the ledger and translates the inbound body
once the key is known (so a request refused in translation is recorded against its team
like any refused chat request). What comes back is a whole chat.completion, or the stream's
chat.completion.chunk dicts (read back from the SSE bytes the chat stream produces, so its
settling, ledger record and disconnect handling are the chat stream's own), or the
GatewayError to answer in the endpoint's own envelope.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from gateway import services, streaming
from gateway.errors import AuthenticationFailed, GatewayError
from gateway.operations.base import Answer
from gateway.operations.chat import ChatOperation

_DATA = b"data: "


class InboundHeaders:
    """The request's headers as the pipeline reads them, with Anthropic's `x-api-key`
    accepted as the gateway key when no `Authorization` header was sent."""

    __slots__ = ("headers", "meta")

    def __init__(self, headers) -> None:
        self.headers = headers
        self.meta = getattr(headers, "meta", None)

    def get(self, name: str, default: str | None = None) -> str | None:
        if name.lower() == "authorization":
            value = self.headers.get("authorization")
            api_key = self.headers.get("x-api-key")
            if not value and api_key:
                return f"Bearer {api_key.strip()}"
            return value if value is not None else default
        return self.headers.get(name, default)


@dataclass
class ChatAnswer:
    """What the chat pipeline answered: exactly one of `body`, `chunks` and `error`. `call`
    is None when the request was refused before its key was known."""

    request_id: str
    call: services.Call | None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    chunks: AsyncGenerator[dict[str, Any], None] | None = None
    error: GatewayError | None = None


class InboundChat(ChatOperation):
    """Chat completions reached through another API's format: one per request, since it
    holds that request's translation and, for the view, its call and its error."""

    def __init__(self, endpoint: str, translate: Callable[[], dict[str, Any]]) -> None:
        self.endpoint = endpoint
        self.path = f"/v1/{endpoint}"  # what a client calls, in the pipeline's messages
        self.translate = translate
        self.call: services.Call | None = None
        self.error: GatewayError | None = None

    def parse(self, call: services.Call, data: Any) -> dict[str, Any]:
        self.call = call  # authenticated by now: a refused translation has its team
        return super().parse(call, self.translate())

    def error_answer(self, error: GatewayError, headers: dict[str, str]) -> Answer:
        self.error = error
        return super().error_answer(error, headers)


async def run_chat(
    *, headers, translate: Callable[[], dict[str, Any]], endpoint: str
) -> ChatAnswer:
    """Serve one request through the chat pipeline. `translate()` reads the inbound request
    and returns its chat request (or raises a GatewayError). A stream must ask for
    `stream_options.include_usage`: its last chunk carries the billed usage, which every
    inbound stream format reports at its end."""
    inbound = InboundHeaders(headers)
    if not inbound.get("authorization"):
        error = AuthenticationFailed(
            "No API key: send your gateway key as 'x-api-key: <key>' or "
            "'Authorization: Bearer <key>'."
        )
        request_id = "req_" + uuid.uuid4().hex
        return ChatAnswer(request_id, None, {"X-Request-ID": request_id}, error=error)
    operation = InboundChat(endpoint, translate)
    answer = await services.run(operation, headers=inbound, body={})
    request_id = answer.headers.get("X-Request-ID", "")
    out = ChatAnswer(request_id, operation.call, dict(answer.headers))
    if operation.error is not None:
        out.error = operation.error
    elif answer.events is not None:
        out.chunks = _chunks(answer.events)
    else:
        out.body = answer.body
    return out


async def _chunks(events: AsyncIterator[bytes]) -> AsyncGenerator[dict[str, Any], None]:
    """The chat stream's SSE frames as dicts, up to `[DONE]`. An interrupted stream ends
    with its `{"error": ...}` frame and no `[DONE]`. Closing this closes the chat stream,
    so a client that goes away is accounted for there."""
    async with aclosing(cast(AsyncGenerator[bytes, None], events)):  # generators, both
        async for frame in events:
            if frame == streaming.DONE:
                return
            if frame.startswith(_DATA):
                yield orjson.loads(frame[len(_DATA) :])
