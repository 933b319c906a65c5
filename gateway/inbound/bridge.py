"""The one seam between the inbound formats and the chat pipeline.

`run_chat` runs a translated chat request exactly as `ChatCompletionsView.post` does:
(gateway.auth.authenticate, so that a request refused in translation is recorded against its
team) services.prepare → admit → serve_cached | attempt_models + streaming.live_events |
complete, and services.fail on any error. What comes back is a whole chat.completion, or
the stream's chat.completion.chunk dicts (read back from the SSE bytes the chat stream
produces, so its settling, ledger record and disconnect handling are the chat stream's own),
or the GatewayError to answer in the endpoint's own envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from gateway import runtime, services, streaming
from gateway.auth import authenticate
from gateway.errors import AuthenticationFailed, ClientDisconnected, GatewayError

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
    """What the chat pipeline answered: exactly one of `body`, `chunks` and `error`."""

    call: services.Call
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    chunks: AsyncGenerator[dict[str, Any], None] | None = None
    error: GatewayError | None = None


def mark_endpoint(call: services.Call, endpoint: str) -> None:
    """The ledger's hook for the endpoint a request came to ("messages", "responses").

    Set on the call before it is prepared; the pipeline's `Call.endpoint` field and the
    ledger's `UsageRecord.endpoint` column (issue 18, the pipeline branch) write it. Until
    they exist the attribute rides along unread."""
    setattr(call, "endpoint", endpoint)  # noqa: B010 (a field the pipeline branch declares)


async def run_chat(
    *, headers, translate: Callable[[], dict[str, Any]], endpoint: str
) -> ChatAnswer:
    """Serve one request through the chat pipeline. `translate()` reads the inbound request
    and returns its chat request (or raises a GatewayError); it runs once the key is known,
    so a refused translation is recorded against the team like any refused chat request.
    A stream must ask for `stream_options.include_usage`: its last chunk carries the billed
    usage, which every inbound stream format reports at its end."""
    call = services.new_call()
    mark_endpoint(call, endpoint)
    inbound = InboundHeaders(headers)
    try:
        authorization = inbound.get("authorization")
        if not authorization:
            raise AuthenticationFailed(
                "No API key: send your gateway key as 'x-api-key: <key>' or "
                "'Authorization: Bearer <key>'."
            )
        call.key, call.team, _ = await authenticate(authorization, inbound.meta)
        raw = orjson.dumps(translate())
        await services.prepare(call, headers=inbound, raw_body=raw)
        hit = await services.admit(call)
        if hit is not None:
            cost = await services.serve_cached(call, hit)
            if call.stream:
                events = streaming.cached_events(call, hit)
                return ChatAnswer(call, call.headers(cost), chunks=_chunks(events))
            return ChatAnswer(call, call.headers(cost), body=services.client_body(call, hit.body))
        if call.stream:
            chunks, first, result = await services.attempt_models(call, streaming.start_stream)
            events = streaming.live_events(call, chunks, first, result)
            return ChatAnswer(call, call.headers(None), chunks=_chunks(events))
        body, out_headers = await services.complete(call)
        return ChatAnswer(call, out_headers, body=body)
    except GatewayError as error:
        await services.fail(call, error)
        return ChatAnswer(call, call.headers(None), error=error)
    except Exception as exc:  # never a bare 500: the hold is released, a record written
        internal = services.internal_error(exc)
        await services.fail(call, internal)
        return ChatAnswer(call, call.headers(None), error=internal)
    except asyncio.CancelledError:
        runtime.spawn(services.fail(call, ClientDisconnected("The client disconnected.")))
        raise


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
