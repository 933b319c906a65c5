"""OpenAI's Responses API answer, read as chat for the pipeline (no I/O).

A /v1/responses request passed through to an OpenAI-kind provider (`ChatRequest.native`) is
answered in the Responses format. The client gets that answer as it came; the pipeline
reads it as a chat.completion (`response_to_chat`) or as chat chunks (`ResponsesStream`):
the text, the function calls, the finish reason and the usage, which is what it caches,
bills and records.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.providers.base import Usage, token_count

# An incomplete response's reason, as chat's finish_reason.
INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
# The events that end a response stream well (`response.failed` and `error` end it badly).
TERMINAL = frozenset({"response.completed", "response.incomplete"})


def usage_from_responses(raw: Any) -> Usage:
    """The Responses API's usage: input tokens include the cached ones, as chat's do.
    Counts that are not non-negative integers raise ValueError/TypeError (a bad_response)."""
    if not isinstance(raw, dict):
        raise TypeError("usage is not an object")
    details = raw.get("input_tokens_details") or {}
    if not isinstance(details, dict):
        raise TypeError("usage input_tokens_details is not an object")
    return Usage(
        input_tokens=token_count(raw, "input_tokens"),
        output_tokens=token_count(raw, "output_tokens"),
        cached_tokens=token_count(details, "cached_tokens"),
    )


def finish_reason(data: dict[str, Any], calls: bool) -> str:
    if data.get("status") == "incomplete":
        reason = (data.get("incomplete_details") or {}).get("reason")
        return INCOMPLETE.get(reason or "", "length")
    return "tool_calls" if calls else "stop"


def response_to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion for a whole `response` object."""
    if data.get("object") != "response" or not isinstance(data.get("output"), list):
        raise TypeError("not a response object")
    text: list[str] = []
    refusals: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in data["output"]:
        if item["type"] == "message":
            for part in item["content"]:
                if part["type"] == "output_text":
                    text.append(str(part["text"]))
                elif part["type"] == "refusal":
                    refusals.append(str(part["refusal"]))
        elif item["type"] == "function_call":
            fn = {"name": str(item["name"]), "arguments": str(item["arguments"])}
            calls.append({"id": str(item["call_id"]), "type": "function", "function": fn})
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) or (None if calls else ""),
        "refusal": "".join(refusals) or None,
    }
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_responses(data.get("usage"))
    return {
        "id": str(data.get("id") or ""),
        "object": "chat.completion",
        "created": int(data.get("created_at") or time.time()),
        "model": str(data.get("model") or ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(data, bool(calls)),
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        },
    }


class ResponsesStream:
    """Turns Responses stream events into chat chunks, one event at a time. `usage` and
    `finish` are set by the terminal event (response.completed or response.incomplete);
    `response.failed` and `error` raise (`failure` returns their status and body)."""

    __slots__ = ("id", "model", "created", "calls", "usage", "finish", "stopped")

    def __init__(self) -> None:
        self.id, self.model, self.created = "", "", int(time.time())
        self.calls: dict[str, int] = {}  # function_call item id -> chat tool_calls index
        self.usage: Usage | None = None
        self.finish: str | None = None
        self.stopped = False

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def on_event(self, data: dict[str, Any]) -> dict[str, Any] | None:
        kind = data["type"]
        if kind == "response.created":
            response = data["response"]
            self.id, self.model = str(response["id"]), str(response["model"])
            return self.chunk({"role": "assistant", "content": ""})
        if kind == "response.output_text.delta":
            return self.chunk({"content": str(data["delta"])})
        if kind == "response.refusal.delta":
            return self.chunk({"refusal": str(data["delta"])})
        if kind == "response.output_item.added" and data["item"]["type"] == "function_call":
            item = data["item"]
            index = self.calls[str(item["id"])] = len(self.calls)
            fn = {"name": str(item["name"]), "arguments": str(item.get("arguments") or "")}
            call = {"index": index, "id": str(item["call_id"]), "type": "function", "function": fn}
            return self.chunk({"tool_calls": [call]})
        if kind == "response.function_call_arguments.delta":
            index = self.calls[str(data["item_id"])]
            call = {"index": index, "function": {"arguments": str(data["delta"])}}
            return self.chunk({"tool_calls": [call]})
        if kind in TERMINAL:
            response = data["response"]
            self.usage = usage_from_responses(response.get("usage"))
            self.finish = finish_reason(response, bool(self.calls))
            self.stopped = True
            return self.chunk({}, self.finish)
        return None


def failure(data: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(status, error body) for an event that ends a stream badly, else None."""
    kind = data.get("type")
    if kind == "error":
        code = str(data.get("code") or "")
        return (429 if "rate_limit" in code else 500), {"error": data}
    if kind == "response.failed":
        error = (data.get("response") or {}).get("error") or {}
        code = str(error.get("code") or "")
        return (429 if "rate_limit" in code else 500), {"error": error}
    return None
