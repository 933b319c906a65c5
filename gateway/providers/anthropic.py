"""Anthropic's Messages API, translated to and from OpenAI's chat format.

Request: system messages become `system`, tool calls and results become tool_use/tool_result
blocks, data-URL images become base64 sources, `max_tokens` is always sent (Anthropic
requires it). Answer: content blocks become `message.content` and `tool_calls`; usage counts
cache reads and writes as prompt tokens (see `Usage`). Streams translate Anthropic's events
into OpenAI chunks; only `message_stop` completes a stream.

A request that came in Anthropic's own format (`ChatRequest.native`, from /v1/messages) is
sent as it came, with only the model, the output cap and `stream` set by the gateway. Its
answer is still translated for the pipeline, and kept as it came: `Completion.native`, and
in a stream every event rides on its chunk as `NATIVE_EVENT` (an event with no chat
equivalent on a chunk with no choices), for the /v1/messages view to relay.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from gateway.providers.anthropic_format import (
    FINISH_REASONS,
    THINKING_FIELDS,
    refusals,
    request_to_anthropic,
    response_to_openai,
    structured_tool,
    thinking_block,
    usage_from_anthropic,
)
from gateway.providers.base import (
    NATIVE_EVENT,
    ChatRequest,
    Completion,
    ProviderAdapter,
    StreamResult,
    check_chunk,
    check_completion,
    error_from_response,
    stream_cut,
)

_PARSE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# The HTTP status Anthropic documents for each error type, for errors sent inside a stream.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"
    label = "Anthropic"
    final_events = frozenset({"message_stop"})
    default_base_url = "https://api.anthropic.com"
    api_version = "2023-06-01"

    def messages_url(self) -> str:
        # Accept a base URL configured either with or without the /v1 suffix.
        return self.url("/messages" if self.url("").endswith("/v1") else "/v1/messages")

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.config.api_key, "anthropic-version": self.api_version}

    def refusals(self, body: dict[str, Any]) -> dict[str, str]:
        return refusals(body)

    def payload(self, request: ChatRequest) -> tuple[dict[str, Any], dict[str, str]]:
        """(the Messages body, the headers) for a request: its translation, or the client's
        own body (`native`) with the model and the gateway's output cap set."""
        native = request.native
        if native is None:
            return request_to_anthropic(request, self.config.name), self.headers()
        body = {k: v for k, v in native.body.items() if k != "stream"}
        body["model"] = request.upstream_model or body.get("model")
        if request.output_cap:
            body["max_tokens"] = request.output_cap
        return body, {**native.headers, **self.headers()}

    async def complete(self, request: ChatRequest) -> Completion:
        payload, headers = self.payload(request)
        data = await self.post_json(self.messages_url(), payload, headers)
        try:
            body = check_completion(response_to_openai(data, _structured(request)))
            usage = usage_from_anthropic(data["usage"])
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc
        return Completion(body=body, usage=usage, native=data if request.native else None)

    async def stream(
        self, request: ChatRequest, result: StreamResult
    ) -> AsyncIterator[dict[str, Any]]:
        payload, headers = self.payload(request)
        events = self.sse(self.messages_url(), {**payload, "stream": True}, headers)
        state = _StreamState(self.config.name, _structured(request))
        native = request.native is not None
        async with aclosing(events):
            async for _event, data in events:
                try:
                    chunk = state.on_event(data)
                    if chunk is not None:
                        check_chunk(chunk)
                except _PARSE_ERRORS as exc:
                    raise self.fail(exc) from exc
                if native:  # every event is relayed, on its chunk or on one of its own
                    chunk = chunk or state.chunk_without_choices()
                    chunk[NATIVE_EVENT] = data
                if chunk is not None:
                    yield chunk
                if state.stopped:
                    break
        if not state.stopped:
            raise stream_cut(self.config.name, "no message_stop")
        try:
            result.usage = usage_from_anthropic(state.usage)
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc
        result.finish_reason = state.finish_reason


def _structured(request: ChatRequest) -> str | None:
    if request.native is not None:  # sent as it came: output_config is Anthropic's own
        return None
    tool = structured_tool(request.body)
    return tool["name"] if tool is not None else None


class _StreamState:
    """Turns Anthropic stream events into OpenAI chunks, one event at a time.

    For a structured-output request (`structured`: the forced tool's name) that tool's
    input_json_delta events become content deltas and its `tool_use` stop a "stop"."""

    __slots__ = (
        "provider",
        "structured",
        "answer_block",
        "id",
        "model",
        "created",
        "usage",
        "stop_reason",
        "tools",
        "thoughts",
        "stopped",
    )

    def __init__(self, provider: str, structured: str | None = None) -> None:
        self.provider = provider
        self.structured = structured
        self.answer_block: int | None = None  # the content block of the structured answer
        self.id, self.model, self.created = "", "", int(time.time())
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool index
        self.thoughts: dict[int, int] = {}  # block index -> index among `thinking_blocks`
        self.stopped = False

    @property
    def finish_reason(self) -> str:
        if self.answer_block is not None and self.stop_reason == "tool_use":
            return "stop"
        return FINISH_REASONS.get(self.stop_reason or "", "stop")

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def chunk_without_choices(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
        }

    def on_event(self, data: dict[str, Any]) -> dict[str, Any] | None:
        handler = _HANDLERS.get(data["type"])  # ping, content_block_stop, new types: ignored
        return handler(self, data) if handler is not None else None

    def _message_start(self, data: dict[str, Any]) -> dict[str, Any]:
        message = data["message"]
        self.id, self.model = message["id"], message["model"]
        self.usage.update(message.get("usage") or {})
        if not isinstance(self.id, str) or not isinstance(self.model, str):
            raise TypeError("message id or model is not a string")
        return self.chunk({"role": "assistant", "content": ""})

    def _message_delta(self, data: dict[str, Any]) -> None:
        self.stop_reason = data["delta"].get("stop_reason") or self.stop_reason
        # Output tokens are cumulative; newer API versions also repeat the input counts here.
        self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})

    def _message_stop(self, data: dict[str, Any]) -> dict[str, Any]:
        self.stopped = True
        return self.chunk({}, self.finish_reason)

    def _error(self, data: dict[str, Any]) -> None:
        status = _ERROR_STATUS.get((data.get("error") or {}).get("type", ""), 500)
        raise error_from_response(self.provider, status, orjson.dumps(data).decode())

    def _block_start(self, data: dict[str, Any]) -> dict[str, Any] | None:
        index, block = data["index"], data["content_block"]
        if block["type"] == "tool_use" and self.structured and block["name"] == self.structured:
            self.answer_block = index
            return None
        if block["type"] == "tool_use":
            self.tools[index] = len(self.tools)
            call = {
                "index": self.tools[index],
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            return self.chunk({"tool_calls": [call]})
        if block["type"] == "text" and block.get("text"):
            return self.chunk({"content": block["text"]})
        if block["type"] in THINKING_FIELDS:
            self.thoughts[index] = len(self.thoughts)
            thought = {"index": self.thoughts[index], **thinking_block(block)}
            return self.chunk({"thinking_blocks": [thought]})
        return None

    def _block_delta(self, data: dict[str, Any]) -> dict[str, Any] | None:
        index, delta = data["index"], data["delta"]
        if delta["type"] == "text_delta":
            return self.chunk({"content": delta["text"]})
        if delta["type"] == "input_json_delta" and index == self.answer_block:
            return self.chunk({"content": delta["partial_json"]})
        if delta["type"] == "input_json_delta" and index in self.tools:
            call = {"index": self.tools[index], "function": {"arguments": delta["partial_json"]}}
            return self.chunk({"tool_calls": [call]})
        if delta["type"] == "thinking_delta" and index in self.thoughts:
            text = delta["thinking"]
            if not isinstance(text, str):
                raise TypeError("a thinking delta is not a string")
            thought = {"index": self.thoughts[index], "thinking": text}
            return self.chunk({"reasoning_content": text, "thinking_blocks": [thought]})
        if delta["type"] == "signature_delta" and index in self.thoughts:
            if not isinstance(delta["signature"], str):
                raise TypeError("a signature delta is not a string")
            thought = {"index": self.thoughts[index], "signature": delta["signature"]}
            return self.chunk({"thinking_blocks": [thought]})
        return None


_HANDLERS = {
    "message_start": _StreamState._message_start,
    "content_block_start": _StreamState._block_start,
    "content_block_delta": _StreamState._block_delta,
    "message_delta": _StreamState._message_delta,
    "message_stop": _StreamState._message_stop,
    "error": _StreamState._error,
}
