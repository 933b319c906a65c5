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
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson

from gateway import services, streaming
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest
from gateway.operations.base import Answer
from gateway.operations.chat import ChatOperation
from gateway.providers.base import NATIVE_EVENT, ChatRequest, Native, ProviderAdapter
from gateway.snapshot import ModelSnap

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
    is None when the request was refused before its key was known. `native`: the provider's
    own answer, when the request was passed through natively (see `Translated`)."""

    request_id: str
    call: services.Call | None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    chunks: AsyncGenerator[dict[str, Any], None] | None = None
    error: GatewayError | None = None
    native: dict[str, Any] | None = None


@dataclass(slots=True)
class Translated:
    """An inbound request as chat (what the pipeline reads and other kinds are sent), and
    the client's own request (`native`) for models of its kind. `native_bound`: the most
    input tokens the native request can be billed for, as far as its bytes tell;
    `unbounded_documents`: it holds documents whose tokens no byte count tells (PDFs),
    so its hold covers the chain's largest context window, which no prompt can exceed."""

    chat: dict[str, Any]
    native: Native | None = None
    native_bound: int = 0
    unbounded_documents: bool = False


class InboundChat(ChatOperation):
    """Chat completions reached through another API's format: one per request, since it
    holds that request's translation and, for the view, its call and its error."""

    def __init__(self, endpoint: str, translate: Callable[[], dict[str, Any] | Translated]) -> None:
        self.endpoint = endpoint
        self.path = f"/v1/{endpoint}"  # what a client calls, in the pipeline's messages
        self.translate = translate
        self.translated = Translated({})
        self.call: services.Call | None = None
        self.error: GatewayError | None = None

    def parse(self, call: services.Call, data: Any) -> dict[str, Any]:
        self.call = call  # authenticated by now: a refused translation has its team
        translated = self.translate()
        if not isinstance(translated, Translated):
            translated = Translated(translated)
        self.translated = translated
        return super().parse(call, translated.chat)

    def fit_chain(self, call: services.Call, chain: list[ModelSnap]) -> list[ModelSnap]:
        """A request holding what only one kind of provider serves, routed to a chain with
        none of that kind, is refused here, before a budget hold is taken (a hold it could
        not use would answer 429 instead of saying why)."""
        chain = super().fit_chain(call, chain)
        native = self.translated.native
        if native is None or not native.only:
            return chain
        if not any(m.provider.kind == native.kind for m in chain):
            param, why = native.only[0]
            first = chain[0]
            raise InvalidRequest(
                f"`{param}` cannot be served by model {first.name} ({first.provider.kind}): {why}.",
                param=param,
                code="unsupported_parameter",
            )
        return chain

    def input_upper_bound(self, call: services.Call) -> int:
        bound = super().input_upper_bound(call)
        if self.translated.native is None:
            return bound
        bound = max(bound, self.translated.native_bound)
        if self.translated.unbounded_documents:
            bound += max((m.context_window or 0 for m in call.chain), default=0) or 1_000_000
        return bound

    def cache_key(self, call: services.Call, chain: list[ModelSnap]) -> str | None:
        native = self.translated.native
        if native is not None and native.only:  # its answer may hold what chat cannot
            return None
        return super().cache_key(call, chain)

    def provider_request(
        self, call: services.Call, model: ModelSnap, adapter: ProviderAdapter, cap: int | None
    ) -> tuple[ChatRequest | None, tuple[str, str] | None]:
        native = self.translated.native
        if native is None:
            return super().provider_request(call, model, adapter, cap)
        if adapter.kind == native.kind:  # sent as it came, minus the model's dropped params
            body = {k: v for k, v in native.body.items() if k not in model.drop_params}
            request = ChatRequest(
                body=call.body,
                upstream_model=model.upstream_id,
                output_cap=cap,
                usage_ceiling=services.usage_ceiling(model),
                native=replace(native, body=body),
            )
            return request, None
        if native.only:
            param, why = native.only[0]
            kind = model.provider.kind
            message = f"`{param}` cannot be served by model {model.name} ({kind}): {why}."
            return None, (param, message)
        return super().provider_request(call, model, adapter, cap)

    def error_answer(self, error: GatewayError, headers: dict[str, str]) -> Answer:
        self.error = error
        return super().error_answer(error, headers)


async def run_chat(
    *, headers, translate: Callable[[], dict[str, Any] | Translated], endpoint: str
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
        out.native = answer.native
    return out


async def relay(
    first: dict[str, Any],
    chunks: AsyncGenerator[dict[str, Any], None],
    *,
    held: frozenset[str],
    own: Callable[[dict[str, Any]], dict[str, Any]],
    failed: Callable[[dict[str, Any], dict[str, Any]], bytes],
) -> AsyncGenerator[bytes, None]:
    """A passed-through stream's own events (each chunk's NATIVE_EVENT, from `first` on), as
    the provider named them. `own(event)` gives the event the gateway's ids; the `held`
    events (the ones that say the answer is complete) wait until the chat stream has ended
    well, and its error chunk becomes `failed(chunk, the last event relayed)` instead."""
    waiting: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    chunk: dict[str, Any] | None = first
    while chunk is not None:
        if "error" in chunk:
            yield failed(chunk, last)
            return
        data = chunk.get(NATIVE_EVENT)
        if isinstance(data, dict):  # the gateway's last chunk (its usage) carries none
            last = data = own(data)
            if data.get("type") in held:
                waiting.append(data)
            else:
                yield named_event(data)
        chunk = await anext(chunks, None)
    for data in waiting:
        yield named_event(data)


def named_event(data: dict[str, Any]) -> bytes:
    """A server-sent event named after its data's `type`, as Anthropic and OpenAI send them."""
    kind = str(data.get("type") or "")
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


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
