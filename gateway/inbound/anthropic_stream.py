"""A chat stream (chat.completion.chunk dicts) as Anthropic's Messages stream events:

message_start, ping, then per content block content_block_start, content_block_delta
(thinking_delta and signature_delta / text_delta / input_json_delta)..., content_block_stop,
and at the end message_delta (the stop reason and the billed usage) and message_stop. A chat
stream that failed after it started ends with Anthropic's `error` event instead of
message_delta/message_stop.

A stream passed through to an Anthropic-kind model carries Claude's own events on its
chunks (`NATIVE_EVENT`): they are relayed as they came (message_start with the gateway's
message id), except that message_delta and message_stop are held until the chat stream
has ended well, so that a stream the gateway ends with an error (usage it cannot bill)
never looks complete first.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from gateway.inbound.anthropic_messages import STOP_REASONS, usage
from gateway.inbound.bridge import relay
from gateway.providers.base import NATIVE_EVENT


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Blocks:
    """The content blocks opened so far: the open one, and the chat tool index of each."""

    def __init__(self) -> None:
        self.count = 0
        self.open: int | None = None
        self.text_open = False
        self.tools: dict[int, int] = {}  # chat tool_calls index -> block index
        self.thoughts: dict[int, int] = {}  # chat thinking_blocks index -> block index

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open, self.text_open = self.open, None, False
        return [event("content_block_stop", {"type": "content_block_stop", "index": index})]

    def start(self, block: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self.open, self.count = self.count, self.count + 1
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": self.open, "content_block": block},
            )
        )
        return out

    def text(self, text: str) -> list[bytes]:
        out = [] if self.text_open else self.start({"type": "text", "text": ""})
        self.text_open = True
        delta = {"type": "text_delta", "text": text}
        return out + [_delta(self.open, delta)]

    def thought(self, piece: dict[str, Any]) -> list[bytes]:
        """A piece of a thinking block: its start (type), text or signature."""
        out: list[bytes] = []
        index = piece.get("index", 0)
        if index not in self.thoughts:
            if piece.get("type") == "redacted_thinking":
                block = {"type": "redacted_thinking", "data": piece.get("data") or ""}
            else:
                block = {"type": "thinking", "thinking": "", "signature": ""}
            out += self.start(block)
            self.thoughts[index] = self.open  # type: ignore[assignment]
        at = self.thoughts[index]
        if piece.get("thinking"):
            out.append(_delta(at, {"type": "thinking_delta", "thinking": piece["thinking"]}))
        if piece.get("signature"):
            out.append(_delta(at, {"type": "signature_delta", "signature": piece["signature"]}))
        return out

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.tools:
            block = {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or ""}
            out += self.start({**block, "input": {}})
            self.tools[index] = self.open  # type: ignore[assignment]
        if fn.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": fn["arguments"]}
            out.append(_delta(self.tools[index], delta))
        return out


def _delta(index: int | None, delta: dict[str, Any]) -> bytes:
    return event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


async def events(
    chunks: AsyncGenerator[dict[str, Any], None],
    *,
    message_id: str,
    model: str,
    input_estimate: int,
) -> AsyncIterator[bytes]:
    """Anthropic's event sequence for a chat stream. `input_estimate`: the prompt tokens
    message_start reports (the gateway's estimate; message_delta carries the billed count,
    which the anthropic SDK takes over)."""
    async with aclosing(chunks):  # closing this stream closes the chat stream (accounting)
        first = await anext(chunks, None)
        if first is not None and NATIVE_EVENT in first:
            frames = _relayed(first, chunks, message_id)
        else:
            frames = _translated(first, chunks, message_id, model, input_estimate)
        async with aclosing(frames):
            async for frame in frames:
                yield frame


_HELD = frozenset({"message_delta", "message_stop"})


def _relayed(
    first: dict[str, Any], chunks: AsyncGenerator[dict[str, Any], None], message_id: str
) -> AsyncGenerator[bytes, None]:
    def own(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("type") != "message_start":
            return data
        return {**data, "message": {**data.get("message", {}), "id": message_id}}

    return relay(first, chunks, held=_HELD, own=own, failed=lambda chunk, _last: _error(chunk))


def _error(chunk: dict[str, Any]) -> bytes:
    error = chunk["error"] or {}
    message = str(error.get("message") or "The stream failed.")
    return event("error", {"type": "error", "error": {"type": "api_error", "message": message}})


async def _translated(
    first: dict[str, Any] | None,
    chunks: AsyncGenerator[dict[str, Any], None],
    message_id: str,
    model: str,
    input_estimate: int,
) -> AsyncGenerator[bytes, None]:
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_estimate, "output_tokens": 0},
    }
    yield event("message_start", {"type": "message_start", "message": start})
    yield event("ping", {"type": "ping"})
    blocks = _Blocks()
    finish, final_usage = "stop", None
    chunk = first
    while chunk is not None:
        if "error" in chunk:
            for frame in blocks.close():
                yield frame
            yield _error(chunk)
            return
        if chunk.get("usage"):
            final_usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            for piece in delta.get("thinking_blocks") or []:  # thinking comes first
                for frame in blocks.thought(piece):
                    yield frame
            if delta.get("content"):
                for frame in blocks.text(delta["content"]):
                    yield frame
            for call in delta.get("tool_calls") or []:
                for frame in blocks.tool(call):
                    yield frame
            finish = choice.get("finish_reason") or finish
        chunk = await anext(chunks, None)
    for frame in blocks.close():
        yield frame
    counts = usage(final_usage or {})
    yield event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"), "stop_sequence": None},
            "usage": counts,
        },
    )
    yield event("message_stop", {"type": "message_stop"})
