"""What an OpenAI-shaped answer or stream chunk must look like before the gateway reads it:
checked once, as it arrives, so nothing later (usage estimate, cache, ledger, the client's
SDK) meets a surprise."""

from __future__ import annotations

from typing import Any


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


def _thoughts(blocks: Any, *, streamed: bool) -> None:
    """`thinking_blocks` (Claude's extended thinking as the gateway carries it in chat)."""
    if blocks is None:
        return
    if not isinstance(blocks, list):
        raise TypeError("thinking_blocks is not a list")
    for block in blocks:
        if not isinstance(block, dict):
            raise TypeError("a thinking block is not an object")
        if streamed and not isinstance(block.get("index", 0), int):
            raise TypeError("a thinking block's index is not an integer")
        for name in ("type", "thinking", "signature", "data"):
            _text_or_none(block.get(name), f"a thinking block's {name}")


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
        _text_or_none(message.get("reasoning_content"), "a message's reasoning_content")
        _thoughts(message.get("thinking_blocks"), streamed=False)
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
            _text_or_none(delta.get("reasoning_content"), "a delta's reasoning_content")
            _thoughts(delta.get("thinking_blocks"), streamed=True)
            _tool_calls(delta.get("tool_calls"), streamed=True)
        _text_or_none(choice.get("finish_reason"), "a finish_reason")
        if not isinstance(choice.get("index", 0), int):
            raise TypeError("a chunk choice's index is not an integer")
    return chunk
