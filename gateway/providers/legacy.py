"""OpenAI's legacy function calling (`functions`, `function_call`) as tools, both ways.

Pure translation, no I/O, the same for every provider kind: the request's `functions` become
`tools` (and `function_call` the `tool_choice`, one call at a time), legacy history
(an assistant's `function_call`, a `function` message) becomes tool calls and tool results,
and the answer comes back in the legacy shape: `message.function_call` and
`finish_reason: "function_call"`, plain and streamed (`delta.function_call`).
"""

from __future__ import annotations

import copy
from typing import Any

LEGACY_FIELDS = ("functions", "function_call")


def uses_functions(body: dict[str, Any]) -> bool:
    return any(body.get(name) is not None for name in LEGACY_FIELDS)


def request_to_tools(body: dict[str, Any]) -> dict[str, Any]:
    """The request with `functions` / `function_call` (and legacy history) as tools.

    Raises ValueError with a client-facing message for what cannot be translated."""
    if body.get("tools") is not None or body.get("tool_choice") is not None:
        raise ValueError("Use either 'functions' / 'function_call' or 'tools' / 'tool_choice'.")
    functions = body.get("functions")
    if functions is not None and (
        not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions)
    ):
        raise ValueError("'functions' must be a list of function objects.")
    out = {k: v for k, v in body.items() if k not in LEGACY_FIELDS}
    if functions:
        out["tools"] = [{"type": "function", "function": f} for f in functions]
        out["parallel_tool_calls"] = False  # a legacy answer holds one function call
    choice = body.get("function_call")
    if choice in ("none", "auto"):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        raise ValueError("'function_call' must be 'none', 'auto' or {\"name\": ...}.")
    if choice is not None and not functions:
        raise ValueError("'function_call' needs 'functions'.")
    out["messages"] = _history(body.get("messages") or [])
    return out


def _history(messages: list[Any]) -> list[Any]:
    """Legacy turns as tool turns: each assistant `function_call` gets an id, and the
    `function` message that answers it becomes a `tool` message with that id."""
    out: list[Any] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        if message.get("role") == "assistant" and isinstance(message.get("function_call"), dict):
            call = message["function_call"]
            call_id = f"call_legacy{i}"
            pending.append((call_id, str(call.get("name", ""))))
            turn = {k: v for k, v in message.items() if k != "function_call"}
            turn["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": call.get("name", ""),
                        "arguments": call.get("arguments") or "{}",
                    },
                }
            ]
            out.append(turn)
        elif message.get("role") == "function":
            match = next((p for p in reversed(pending) if p[1] == message.get("name")), None)
            match = match or (pending[-1] if pending else (f"call_legacy{i}", ""))
            if match in pending:
                pending.remove(match)
            out.append(
                {"role": "tool", "tool_call_id": match[0], "content": message.get("content")}
            )
        else:
            out.append(message)
    return out


def response_to_legacy(body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion with tool calls as the legacy `function_call` answer."""
    body = copy.deepcopy(body)
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        calls = message.pop("tool_calls", None)
        if calls:
            fn = calls[0].get("function") or {}
            message["function_call"] = {
                "name": fn.get("name", ""),
                "arguments": fn.get("arguments", ""),
            }
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "function_call"
    return body


def chunk_to_legacy(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion.chunk with tool call deltas as `delta.function_call` deltas."""
    choices = chunk.get("choices")
    if not choices:
        return chunk
    out = []
    for choice in choices:
        delta = choice.get("delta") or {}
        if "tool_calls" in delta or choice.get("finish_reason") == "tool_calls":
            choice = {**choice, "delta": {k: v for k, v in delta.items() if k != "tool_calls"}}
            first = (delta.get("tool_calls") or [None])[0]
            if first is not None:
                fn = first.get("function") or {}
                call = {"arguments": fn.get("arguments") or ""}
                if fn.get("name"):
                    call = {"name": fn["name"], **call}
                choice["delta"]["function_call"] = call
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "function_call"
        out.append(choice)
    return {**chunk, "choices": out}
