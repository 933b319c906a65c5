"""The loopback OpenAI server's /v1/responses: OpenAI's Responses API, JSON and its named
SSE events (response.created ... response.completed), as OpenAI sends them.

Prompt tokens = ceil(characters of the instructions and input text / 4) unless the
behaviour sets `prompt_tokens`; output tokens = one per word of the answer, plus the tool
call's pieces, plus the behaviour's reasoning tokens. A request with `reasoning` gets a
reasoning item first, with `encrypted_content` when `include` asks for it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson

from tests.loopback_wire import Behaviour, args_pieces, new_id, pieces, sse

ENCRYPTED = "gAAAAB-loopback-encrypted-reasoning"


def _prompt(body: dict[str, Any], b: Behaviour) -> int:
    if b.prompt_tokens is not None:
        return b.prompt_tokens
    text = str(body.get("instructions") or "")
    items = body.get("input")
    if isinstance(items, str):
        text += items
    for item in items if isinstance(items, list) else ():
        content = item.get("content")
        if isinstance(content, str):
            text += content
        elif isinstance(content, list):
            text += "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        text += str(item.get("output") or "")
    return math.ceil(len(text) / 4)


def _items(body: dict[str, Any], b: Behaviour) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if body.get("reasoning"):
        reasoning: dict[str, Any] = {"type": "reasoning", "id": new_id("rs_loop"), "summary": []}
        if "reasoning.encrypted_content" in (body.get("include") or ()):
            reasoning["encrypted_content"] = ENCRYPTED
        items.append(reasoning)
    if b.text:
        text = {"type": "output_text", "text": b.text, "annotations": [], "logprobs": []}
        items.append(
            {
                "type": "message",
                "id": new_id("msg_loop"),
                "status": "completed",
                "role": "assistant",
                "content": [text],
            }
        )
    if b.tool_call:
        name, args = b.tool_call
        items.append(
            {
                "type": "function_call",
                "id": new_id("fc_loop"),
                "call_id": "call_loop1",
                "name": name,
                "arguments": orjson.dumps(args).decode(),
                "status": "completed",
            }
        )
    return items


def response(body: dict[str, Any], b: Behaviour, items: list[dict[str, Any]] | None = None):
    items = _items(body, b) if items is None else items
    prompt = _prompt(body, b)
    output = len(pieces(b.text)) + b.reasoning_tokens
    output += len(args_pieces(b.tool_call[1])) if b.tool_call else 0
    cut = b.finish == "length"
    return {
        "id": new_id("resp_loop"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": items,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": b.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": b.reasoning_tokens},
            "total_tokens": prompt + output,
        },
        "metadata": body.get("metadata") or {},
    }


def frames(body: dict[str, Any], b: Behaviour) -> list[bytes]:
    items = _items(body, b)
    whole = response(body, b, items)
    sequence = iter(range(10_000))

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(sequence), **data}, kind)

    start = {k: v for k, v in whole.items() if k != "usage"}  # no usage yet (the spec's
    start.update(status="in_progress", output=[])  # Response has it an object or absent)
    out = [event("response.created", response=start), event("response.in_progress", response=start)]
    for index, item in enumerate(items):
        if item["type"] == "message":
            opened = {**item, "status": "in_progress", "content": []}
            out.append(event("response.output_item.added", output_index=index, item=opened))
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(event("response.content_part.added", **at, part=empty))
            for piece in pieces(b.text):
                out.append(event("response.output_text.delta", **at, delta=piece, logprobs=[]))
            out.append(event("response.output_text.done", **at, text=b.text, logprobs=[]))
            out.append(event("response.content_part.done", **at, part=item["content"][0]))
        elif item["type"] == "function_call":
            opened = {**item, "status": "in_progress", "arguments": ""}
            out.append(event("response.output_item.added", output_index=index, item=opened))
            at = {"item_id": item["id"], "output_index": index}
            for piece in args_pieces(b.tool_call[1] if b.tool_call else {}):
                out.append(event("response.function_call_arguments.delta", **at, delta=piece))
            done = {"name": item["name"], "arguments": item["arguments"]}
            out.append(event("response.function_call_arguments.done", **at, **done))
        else:
            out.append(event("response.output_item.added", output_index=index, item=item))
        out.append(event("response.output_item.done", output_index=index, item=item))
    kind = "response.incomplete" if whole["status"] == "incomplete" else "response.completed"
    return out + [event(kind, response=whole)]


def error_frame(b: Behaviour) -> bytes:
    message = b.message or "The server had an error while processing your request."
    data = {"type": "error", "code": "server_error", "message": message, "param": None}
    return sse({**data, "sequence_number": 999}, "error")
