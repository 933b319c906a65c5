"""Pure translation between OpenAI's chat format and Anthropic's Messages format (no I/O)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.providers.base import ChatRequest, ProviderError, Usage, token_count

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often omit it.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def request_to_anthropic(request: ChatRequest, provider: str) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request; raises a non-retryable ProviderError
    for what cannot be translated (it would fail the same way on any retry)."""
    body = request.body
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if message["role"] in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            continue
        role, blocks = _message_blocks(message, provider)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # Anthropic wants alternating turns
        else:
            messages.append({"role": role, "content": blocks})
    out: dict[str, Any] = {
        "model": request.upstream_model or body.get("model"),
        "messages": messages,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # OpenAI's range is 0..2
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("stop"):
        out["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    if body.get("tools"):
        out["tools"] = [_tool(t["function"]) for t in body["tools"] if t.get("type") == "function"]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and out.get("tools"):
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def response_to_openai(data: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion body for an Anthropic message."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data["content"]:
        if block["type"] == "text":
            text.append(block["text"])
        elif block["type"] == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": orjson.dumps(block["input"]).decode(),
                    },
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) or (None if calls else ""),
    }
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_anthropic(data["usage"])
    return {
        "id": data["id"],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(data.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": openai_usage(usage),
    }


def usage_from_anthropic(raw: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens exclude cache reads and writes; ours include them.

    Counts that are not non-negative integers raise ValueError/TypeError (a `bad_response`).
    """
    if not isinstance(raw, dict):
        raise TypeError("usage is not an object")
    read = token_count(raw, "cache_read_input_tokens")
    written = token_count(raw, "cache_creation_input_tokens")
    return Usage(
        input_tokens=token_count(raw, "input_tokens") + read + written,
        output_tokens=token_count(raw, "output_tokens"),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _message_blocks(message: dict[str, Any], provider: str) -> tuple[str, list[dict[str, Any]]]:
    role = message["role"]
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message["tool_call_id"],
            "content": _text_of(message.get("content")),
        }
        return "user", [result]
    blocks = [_part(p, provider) for p in _parts(message.get("content"))]
    for call in message.get("tool_calls") or []:
        fn = call["function"]
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise _invalid(
                provider, f"tool call {call['id']} has arguments that are not JSON"
            ) from None
        blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"], "input": args})
    if role not in ("user", "assistant"):
        raise _invalid(provider, f"messages with role {role!r} cannot be sent to Anthropic")
    return role, blocks


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _part(part: dict[str, Any], provider: str) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    if part["type"] == "image_url":
        url = part["image_url"]["url"]
        if url.startswith("data:"):
            header, _, data = url.partition(",")
            media_type = header[5:].split(";", 1)[0]
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _invalid(provider, f"content parts of type {part['type']!r} cannot be sent to Anthropic")


def _text_of(content: Any) -> str:
    return "".join(p.get("text", "") for p in _parts(content) if p.get("type") == "text")


def _tool(fn: dict[str, Any]) -> dict[str, Any]:
    tool = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        tool["description"] = fn["description"]
    return tool


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        out = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(
            choice or ("auto" if parallel is False else "")
        )
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _invalid(provider: str, message: str) -> ProviderError:
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
    }
    return ProviderError(
        f"{provider}: {message}", retryable=False, status=400, kind="invalid_request", body=body
    )
