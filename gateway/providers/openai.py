"""OpenAI's Chat Completions API: the gateway's own wire format, so the adapter mostly forwards.

Streams always ask upstream for `stream_options.include_usage`, so the cost of a streamed
answer is the provider's own count; the usage-only chunk is recorded, not yielded.

A request that came in the Responses format (`ChatRequest.native`, from /v1/responses) is
sent as it came to OpenAI's own /responses, with only the model, the output cap, `stream`
and `store: false` set by the gateway; its answer is read as chat for the pipeline
(gateway/providers/openai_responses.py) and kept as it came for the client.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from gateway.providers.base import (
    DONE,
    NATIVE_EVENT,
    ChatRequest,
    Completion,
    ProviderAdapter,
    ProviderError,
    StreamResult,
    Usage,
    asked,
    check_chunk,
    check_completion,
    stream_cut,
    token_count,
)
from gateway.providers.embeddings import EmbeddingRequest, Embeddings, embeddings_from_openai
from gateway.providers.errors import error_from_response
from gateway.providers.openai_responses import (
    ResponsesStream,
    failure,
    response_to_chat,
    usage_from_responses,
)
from gateway.redaction import scrub_provider_text

_PARSE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def usage_from_openai(raw: Any) -> Usage | None:
    """OpenAI's `usage` object (None when absent), with cached prompt tokens.

    Counts that are not non-negative integers raise ValueError/TypeError (a `bad_response`).
    """
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise TypeError("usage is not an object")
    details = raw.get("prompt_tokens_details") or {}
    if not isinstance(details, dict):
        raise TypeError("usage prompt_tokens_details is not an object")
    return Usage(
        input_tokens=token_count(raw, "prompt_tokens"),
        output_tokens=token_count(raw, "completion_tokens"),
        cached_tokens=token_count(details, "cached_tokens"),
    )


def without_anthropic_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The request without what only Claude reads, for OpenAI-kind providers, which refuse
    fields they do not know: prompt-cache breakpoints (`cache_control` on a message, a
    content part or a tool; OpenAI and vLLM cache prompt prefixes on their own, so the hint
    is translated to their automatic caching) and a past turn's signed `thinking_blocks`
    (context only Claude can verify; the turn's text and tool calls stay). The same dict
    when it has none (a plain loop: this runs on every call to an OpenAI-kind provider)."""
    messages = body.get("messages") or ()
    tools = body.get("tools") or ()
    for message in messages:
        if _marked(message):
            break
    else:
        for tool in tools:
            if "cache_control" in tool:
                break
        else:
            return body
    out = dict(body)
    out["messages"] = [_unmarked(m) for m in messages]
    if tools:
        out["tools"] = [_drop_mark(t) for t in tools]
    return out


def _marked(message: dict[str, Any]) -> bool:
    if "cache_control" in message or "thinking_blocks" in message:
        return True
    content = message.get("content")
    if content.__class__ is list:
        for part in content:
            if part.__class__ is dict and "cache_control" in part:
                return True
    return False


def _unmarked(message: dict[str, Any]) -> dict[str, Any]:
    if not _marked(message):
        return message
    out = {k: v for k, v in message.items() if k not in ("cache_control", "thinking_blocks")}
    if isinstance(out.get("content"), list):
        out["content"] = [_drop_mark(p) if isinstance(p, dict) else p for p in out["content"]]
    return out


def _drop_mark(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "cache_control"}


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"
    label = "OpenAI"
    default_base_url = "https://api.openai.com/v1"
    # OpenAI's current name (its reasoning models reject `max_tokens`).
    max_tokens_param = "max_completion_tokens"
    serves_embeddings = True

    def headers(self) -> dict[str, str]:
        if not self.config.api_key:
            # Our configuration's fault, not the caller's: another provider may serve it.
            raise ProviderError(
                f"{self.config.name}: no API key configured", retryable=True, kind="auth_error"
            )
        return {"authorization": f"Bearer {self.config.api_key}"}

    def refusals(self, body: dict[str, Any]) -> dict[str, str]:
        """Anthropic's extended thinking: OpenAI's reasoning models take `reasoning_effort`
        instead, which a client asks for itself (the budgets do not translate)."""
        thinking = body.get("thinking")
        if asked(body, "thinking") and not (
            isinstance(thinking, dict) and thinking.get("type") == "disabled"
        ):
            return {"thinking": " (Anthropic's extended thinking) is not supported"}
        return {}

    def payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = without_anthropic_fields(request.body)
        body = {**body, "model": request.upstream_model or body.get("model")}
        if request.output_cap and not (body.get("max_completion_tokens") or body.get("max_tokens")):
            body[self.max_tokens_param] = request.output_cap
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def native_payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """The client's own Responses body, with the model, the output cap, `stream` and
        `store: false` (the gateway keeps no responses, and asks OpenAI to keep none)."""
        assert request.native is not None
        body = {k: v for k, v in request.native.body.items() if k != "stream"}
        body["model"] = request.upstream_model or body.get("model")
        if request.output_cap and not body.get("max_output_tokens"):
            body["max_output_tokens"] = request.output_cap
        body["store"] = False
        if stream:
            body["stream"] = True
        return body

    async def respond(self, request: ChatRequest) -> Completion:
        """POST /responses: a request passed through in the Responses format."""
        assert request.native is not None
        payload = self.native_payload(request, stream=False)
        headers = {**request.native.headers, **self.headers()}
        data = await self.post_json(self.url("/responses"), payload, headers)
        try:
            body = check_completion(response_to_chat(data))
            usage = usage_from_responses(data.get("usage"))
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc
        return Completion(body=body, usage=usage, native=data)

    async def respond_stream(
        self, request: ChatRequest, result: StreamResult
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The Responses stream: every event rides on a chunk (`NATIVE_EVENT`)."""
        assert request.native is not None
        payload = self.native_payload(request, stream=True)
        headers = {**request.native.headers, **self.headers()}
        events = self.sse(self.url("/responses"), payload, headers)
        state = ResponsesStream()
        async with aclosing(events):
            async for _event, data in events:
                if data is DONE:
                    break
                try:
                    failed = failure(data)
                    if failed is not None:
                        status, body = failed
                        text = orjson.dumps(body).decode()
                        raise error_from_response(self.config.name, status, text)
                    translated = state.on_event(data)
                    if translated is not None:
                        check_chunk(translated)
                except _PARSE_ERRORS as exc:
                    raise self.fail(exc) from exc
                chunk = translated or state.chunk(None)
                chunk[NATIVE_EVENT] = data
                yield chunk
                if state.stopped:
                    break
        if not state.stopped:
            raise stream_cut(self.config.name, "no response.completed")
        result.usage = state.usage
        result.finish_reason = state.finish

    async def complete(self, request: ChatRequest) -> Completion:
        if request.native is not None:
            return await self.respond(request)
        url = self.url("/chat/completions")
        data = await self.post_json(url, self.payload(request, stream=False), self.headers())
        try:
            check_completion(data)
            usage = usage_from_openai(data.get("usage"))
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc
        return Completion(body=data, usage=usage or Usage(reported=False))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """POST /embeddings, always as floats (see gateway/providers/embeddings.py)."""
        body = {
            **request.body,
            "model": request.upstream_model or request.body.get("model"),
            "encoding_format": "float",
        }
        data = await self.post_json(self.url("/embeddings"), body, self.headers())
        try:
            return embeddings_from_openai(data, len(request.inputs))
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc

    async def stream(
        self, request: ChatRequest, result: StreamResult
    ) -> AsyncIterator[dict[str, Any]]:
        if request.native is not None:
            async with aclosing(self.respond_stream(request, result)) as chunks:
                async for native in chunks:
                    yield native
            return
        url = self.url("/chat/completions")
        events = self.sse(url, self.payload(request, stream=True), self.headers())
        done = False
        async with aclosing(events):
            async for _event, data in events:
                if data is DONE:
                    done = True
                    break
                try:
                    chunk = self._chunk(data, result)
                except _PARSE_ERRORS as exc:
                    raise self.fail(exc) from exc
                if chunk is not None:
                    yield chunk
        if not done:
            raise stream_cut(self.config.name, "no [DONE]")
        if result.finish_reason is None:
            raise stream_cut(self.config.name, "no finish_reason")

    def _chunk(self, data: dict[str, Any], result: StreamResult) -> dict[str, Any] | None:
        """Record usage and finish reason; return the chunk to yield, if it has choices."""
        if not isinstance(data, dict):
            raise TypeError("a chunk is not a JSON object")
        if data.get("error"):
            raise ProviderError(
                f"{self.config.name}: error in stream: {scrub_provider_text(_message(data))}",
                retryable=True,
                kind="server_error",
                body=data,
            )
        raw = data.pop("usage", None)
        usage = usage_from_openai(raw)
        if usage is not None:
            result.usage = usage
            result.details = usage_details(raw)
        check_chunk(data)
        choices = data.get("choices")
        if not choices:
            return None
        for choice in choices:
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        return data


def usage_details(raw: dict[str, Any]) -> dict[str, Any]:
    """The `*_details` objects of an OpenAI usage (reasoning, audio, prediction tokens...)."""
    return {k: v for k, v in raw.items() if k.endswith("_details") and isinstance(v, dict)}


def _message(data: dict[str, Any]) -> str:
    err = data["error"]
    return str(err.get("message") or err.get("type")) if isinstance(err, dict) else str(err)
