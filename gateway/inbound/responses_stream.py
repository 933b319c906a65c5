"""A chat stream (chat.completion.chunk dicts) as the Responses API's stream events:

response.created, response.in_progress; per output item response.output_item.added, then for
a message response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, or for a function call response.function_call_arguments.delta...,
response.function_call_arguments.done; response.output_item.done; and at the end
response.completed (or response.incomplete) with the whole response and its usage. A chat
stream that failed after it started ends with response.failed.

A stream passed through to an OpenAI-kind model carries OpenAI's own events on its chunks
(`NATIVE_EVENT`): they are relayed as they came (the response's id set to the gateway's),
except that response.completed and response.incomplete are held until the chat stream has
ended well, so that a stream the gateway ends with an error never looks complete first.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from gateway.inbound import responses as fmt
from gateway.inbound.bridge import relay
from gateway.providers.base import NATIVE_EVENT
from gateway.providers.openai_responses import TERMINAL


class _Writer:
    """The events of one response, numbered, and the output items as they grow."""

    def __init__(self, request: dict[str, Any], response_id: str, model: str) -> None:
        self.request, self.response_id, self.model = request, response_id, model
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.tools: dict[int, int] = {}  # chat tool_calls index -> output index

    def event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def response(self, status: str, **extra: Any) -> dict[str, Any]:
        return fmt.envelope(
            self.request,
            response_id=self.response_id,
            model=self.model,
            status=status,
            output=self.output if status != "in_progress" else [],
            usage=extra.pop("usage", None),
            **extra,
        )

    def add(self, item: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self.output.append(item)
        self.open = item
        index = len(self.output) - 1
        out.append(self.event("response.output_item.added", output_index=index, item=item))
        return out

    def text(self, delta: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.open["type"] != "message":
            item_id = f"msg_{self.response_id[5:]}_{len(self.output)}"
            out += self.add(fmt.message_item(item_id, [], "in_progress"))
            part = fmt.output_text("")
            out.append(self.event("response.content_part.added", **self._at(), part=part))
            self.open["content"].append(part)  # type: ignore[index]
        self.open["content"][0]["text"] += delta  # type: ignore[index]
        out.append(self.event("response.output_text.delta", **self._at(), delta=delta, logprobs=[]))
        return out

    def tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index, fn = call.get("index", 0), call.get("function") or {}
        if index not in self.tools:
            item_id = f"fc_{self.response_id[5:]}_{len(self.output)}"
            out += self.add(fmt.function_item(item_id, call.get("id") or "", fn, "in_progress"))
            self.open["arguments"] = ""  # type: ignore[index]
            self.tools[index] = len(self.output) - 1
        item = self.output[self.tools[index]]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.tools[index],
                    delta=fn["arguments"],
                )
            )
        return out

    def _at(self) -> dict[str, Any]:
        assert self.open is not None
        return {
            "item_id": self.open["id"],
            "output_index": len(self.output) - 1,
            "content_index": 0,
        }

    def close(self) -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = next(i for i, x in enumerate(self.output) if x is item)
        out: list[bytes] = []
        if item["type"] == "message":
            part = item["content"][0]
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(
                self.event("response.output_text.done", **at, text=part["text"], logprobs=[])
            )
            out.append(self.event("response.content_part.done", **at, part=part))
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        out.append(self.event("response.output_item.done", output_index=index, item=item))
        return out


async def events(
    chunks: AsyncGenerator[dict[str, Any], None],
    request: dict[str, Any],
    *,
    response_id: str,
    model: str,
) -> AsyncIterator[bytes]:
    """The Responses API's event sequence for a chat stream, or OpenAI's own relayed."""
    async with aclosing(chunks):  # closing this stream closes the chat stream (accounting)
        first = await anext(chunks, None)
        if first is not None and NATIVE_EVENT in first:
            frames = _relayed(first, chunks, request, response_id)
        else:
            frames = _translated(first, chunks, request, response_id, model)
        async with aclosing(frames):
            async for frame in frames:
                yield frame


def _relayed(
    first: dict[str, Any],
    chunks: AsyncGenerator[dict[str, Any], None],
    request: dict[str, Any],
    response_id: str,
) -> AsyncGenerator[bytes, None]:
    def own(data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("response"), dict):
            return data
        return {**data, "response": {**data["response"], "id": response_id}}

    def failed(chunk: dict[str, Any], last: dict[str, Any]) -> bytes:
        w = _Writer(request, response_id, str(first.get("model") or ""))
        seen = last.get("sequence_number")
        w.sequence = seen + 1 if isinstance(seen, int) else 0  # OpenAI's numbering goes on
        return _failed(w, chunk)

    return relay(first, chunks, held=TERMINAL, own=own, failed=failed)


def _failed(w: _Writer, chunk: dict[str, Any]) -> bytes:
    message = str((chunk["error"] or {}).get("message") or "The stream failed.")
    error = {"code": "server_error", "message": message}
    return w.event("response.failed", response=w.response("failed", error=error))


async def _translated(
    first: dict[str, Any] | None,
    chunks: AsyncGenerator[dict[str, Any], None],
    request: dict[str, Any],
    response_id: str,
    model: str,
) -> AsyncGenerator[bytes, None]:
    w = _Writer(request, response_id, model)
    yield w.event("response.created", response=w.response("in_progress"))
    yield w.event("response.in_progress", response=w.response("in_progress"))
    finish, chat_usage = "stop", None
    chunk = first
    while chunk is not None:
        if "error" in chunk:
            for frame in w.close():
                yield frame
            yield _failed(w, chunk)
            return
        if chunk.get("model"):
            w.model = chunk["model"]
        if chunk.get("usage"):
            chat_usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                for frame in w.text(delta["content"]):
                    yield frame
            for call in delta.get("tool_calls") or []:
                for frame in w.tool(call):
                    yield frame
            finish = choice.get("finish_reason") or finish
        chunk = await anext(chunks, None)
    for frame in w.close():
        yield frame
    incomplete = fmt.INCOMPLETE.get(finish)
    status = "incomplete" if incomplete else "completed"
    done = w.response(status, usage=fmt.usage(chat_usage or {}), incomplete=incomplete)
    yield w.event(f"response.{status}", response=done)
