"""Streamed answers as OpenAI server-sent events.

Fallback happens only before the first byte: a provider's stream is opened and its first
chunk read inside the fallback loop, and only then does the response start. After that an
upstream failure ends the stream with an explicit error event and no `[DONE]`, and the ledger
records `stream_error`: a client never mistakes a cut answer for a complete one.

The same holds for a stream whose usage cannot be billed (negative, not integers, or beyond
the model's context window plus max output: `usage_problem`). Usage arrives last, so the
answer cannot fall back any more: the stream ends with the error event (reason "upstream sent
a malformed answer") instead of `[DONE]`, and what was delivered is billed at the gateway's
own estimate (prompt estimate + the delivered text's tokens), never at the provider's figure.
Anything else raised while relaying ends the stream the same way (reason "internal error").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson

from gateway import inflight, runtime, services, tokens
from gateway.cache import CachedAnswer
from gateway.logs import request_id_var
from gateway.money import Cost, cost_of, format_usd
from gateway.providers.base import (
    ProviderError,
    StreamResult,
    Usage,
    bad_usage,
    prompt_details,
    usage_problem,
)
from gateway.providers.openai import usage_details

log = logging.getLogger(__name__)
DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def openai_usage(
    usage: Usage, cost: Cost | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The usage object of a stream's last chunk: the counts the gateway billed, the
    upstream's `*_details` objects as they came (`details`), and the cost."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt_details(usage),
    }
    for name, value in (details or {}).items():
        out[name] = {**value, **out.get(name, {})}
    if cost is not None:  # an extension field: the exact cost, known only at the end of a stream
        out["cost_usd"] = None if cost.unpriced else format_usd(cost.usd)
    return out


class _Choice:
    """One choice of a stream, as its deltas arrive."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.reasoning: list[str] = []  # `reasoning_content` (Claude's thinking, vLLM's...)
        self.thoughts: dict[int, dict[str, Any]] = {}  # `thinking_blocks` by their index
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, list[Any]] | None = None  # "content" / "refusal" token lists
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        if delta.get("reasoning_content"):
            self.reasoning.append(delta["reasoning_content"])
        for thought in delta.get("thinking_blocks") or []:
            slot = self.thoughts.setdefault(thought.get("index", 0), {})
            for key, value in thought.items():
                if key in ("thinking", "signature") and key in slot:
                    slot[key] += value  # the text and the signature arrive in pieces
                elif key != "index":
                    slot[key] = value
        for call in delta.get("tool_calls") or []:
            # A function call's name and arguments, or a custom tool's name and input.
            kind = "custom" if call.get("type") == "custom" or "custom" in call else "function"
            text = "input" if kind == "custom" else "arguments"
            slot = self.tool_calls.setdefault(
                call.get("index", 0), {"id": "", "type": kind, kind: {"name": "", text: ""}}
            )
            slot["id"] = call.get("id") or slot["id"]
            kind = slot["type"]
            text = "input" if kind == "custom" else "arguments"
            part = call.get(kind) or {}
            slot[kind]["name"] += part.get("name") or ""
            slot[kind][text] += part.get(text) or ""
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            if self.logprobs is None:
                self.logprobs = {"content": [], "refusal": []}
            for part in ("content", "refusal"):
                self.logprobs[part] += logprobs.get(part) or []
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def whole(self, index: int) -> dict[str, Any]:
        # `refusal` and `logprobs` are required by OpenAI's spec, null when the stream had none.
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) or None,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.thoughts:
            message["thinking_blocks"] = [self.thoughts[i] for i in sorted(self.thoughts)]
        logprobs = self.logprobs
        out: dict[str, Any] = {
            "index": index,
            "message": message,
            "logprobs": {k: v or None for k, v in logprobs.items()} if logprobs else None,
            "finish_reason": self.finish_reason,
        }
        return out


class Accumulator:
    """Rebuilds a whole chat.completion from the chunks of a stream (for the cache): every
    choice (n > 1), with its refusal and logprobs, and the chunk's service_tier."""

    META = ("id", "created", "model", "system_fingerprint", "service_tier")

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.finish_reason: str | None = None  # the last one seen, of any choice

    def add(self, chunk: dict[str, Any]) -> None:
        for name in self.META:
            if chunk.get(name) is not None and self.meta.get(name) is None:
                self.meta[name] = chunk[name]
        for choice in chunk.get("choices") or []:
            slot = self.choices.setdefault(choice.get("index", 0), _Choice())
            slot.add(choice)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def text(self) -> str:
        return "".join(
            "".join(c.reasoning)
            + "".join(c.content)
            + "".join(_call_text(t) for t in c.tool_calls.values())
            for c in self.choices.values()
        )

    def completion(self, usage: Usage, details: dict[str, Any] | None = None) -> dict[str, Any]:
        choices = self.choices or {0: _Choice()}
        return {
            **{k: v for k, v in self.meta.items() if v is not None},
            "object": "chat.completion",
            "choices": [choices[i].whole(i) for i in sorted(choices)],
            "usage": openai_usage(usage, details=details),
        }


def _call_text(call: dict[str, Any]) -> str:
    """What a tool call generated: a function's arguments or a custom tool's input."""
    part = call.get("custom") or call.get("function") or {}
    return part.get("input") or part.get("arguments") or ""


def replay_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole chat.completion (e.g. from the cache) as the chunks a stream would have sent:
    with its refusal, logprobs, service_tier and system_fingerprint."""
    base = {
        "id": body.get("id", ""),
        "object": "chat.completion.chunk",
        "created": body.get("created", 0),
        "model": body.get("model", ""),
    }
    for name in ("service_tier", "system_fingerprint"):
        if body.get(name) is not None:
            base[name] = body[name]
    chunks = []
    for choice in body.get("choices", []):
        index, message = choice.get("index", 0), choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("reasoning_content"):
            delta["reasoning_content"] = message["reasoning_content"]
        if message.get("thinking_blocks"):
            delta["thinking_blocks"] = [
                {"index": j, **block} for j, block in enumerate(message["thinking_blocks"])
            ]
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {"index": j, **call} for j, call in enumerate(message["tool_calls"])
            ]
        first: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None}
        if "logprobs" in choice:
            first["logprobs"] = choice["logprobs"]
        chunks.append({**base, "choices": [first]})
        chunks.append(
            {
                **base,
                "choices": [
                    {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
                ],
            }
        )
    return chunks


async def start_stream(adapter, request):
    """Open a provider stream and read its first chunk (still inside the fallback loop)."""
    result = StreamResult()
    chunks = adapter.stream(request, result)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        raise ProviderError(
            f"{adapter.config.name}: the stream ended before any chunk",
            retryable=True,
            kind="stream_cut",
        ) from None
    except BaseException:
        await chunks.aclose()  # free the connection before the next model is tried
        raise
    return chunks, first, result


async def live_events(
    call: services.Call, chunks, first: dict[str, Any], result: StreamResult
) -> AsyncIterator[bytes]:
    request_id_var.set(call.request_id)  # this runs in the task that sends the response
    acc = Accumulator()
    acc.add(first)
    settled = False
    # What has been delivered, for the lost-request sweep should this process die: a dict
    # write per chunk, sent by a per-process ticker (gateway/inflight.py).
    model = call.served
    assert model is not None and call.operation is not None  # set by attempt_models
    operation = call.operation
    served, provider = model.name, model.provider.name
    delivered = inflight.delta_chars(first)
    inflight.progress(call.request_id, delivered, served, provider)
    try:
        yield sse(operation.client_chunk(call, first))
        while True:
            try:
                async with asyncio.timeout_at(call.deadline):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            acc.add(chunk)
            delivered += inflight.delta_chars(chunk)
            inflight.progress(call.request_id, delivered, served, provider)
            yield sse(operation.client_chunk(call, chunk))
        problem = usage_problem(result.usage, services.usage_ceiling(model))
        if problem is not None:
            raise bad_usage(provider, problem)
    except Exception as exc:  # ProviderError, TimeoutError, or anything nobody foresaw
        if isinstance(exc, ProviderError):
            reason, kind = exc.public, exc.kind
            log.info("stream of %s failed: %s", call.request_id, exc.message)
        elif isinstance(exc, TimeoutError):
            reason, kind = "the request deadline passed", "deadline"
        else:
            log.error("unexpected error in the stream of %s", call.request_id, exc_info=exc)
            reason, kind = "internal error", "internal_error"
        settled = True
        await _settle(call, acc, result, status="stream_error", error_type=kind)
        yield _error_event(reason)
        return
    finally:
        if not settled and acc.finish_reason is None:
            # The client went away (or we were cancelled) mid-stream: account for what the
            # provider produced so far, in a task of its own since this one is ending.
            settled = True
            runtime.spawn(
                _settle(call, acc, result, status="error", error_type="client_disconnected")
            )
            await chunks.aclose()
    settled = True
    settled_as = await _settle(call, acc, result, status="ok")
    if settled_as is None:
        yield _error_event("internal error")
        return
    usage, cost = settled_as
    if (call.body.get("stream_options") or {}).get("include_usage"):
        details = result.details if usage.reported else None
        usage_out = openai_usage(usage, cost, details)
        yield sse({**_chunk_base(acc), "choices": [], "usage": usage_out})
    yield DONE


def _error_event(reason: str) -> bytes:
    return sse(
        {
            "error": {
                "message": f"The upstream stream failed after it started: {reason}. "
                "The answer is incomplete.",
                "type": "api_error",
                "param": None,
                "code": "stream_interrupted",
            }
        }
    )


async def _settle(
    call: services.Call, acc: Accumulator, result: StreamResult, **outcome: str
) -> tuple[Usage, Cost] | None:
    """`_account`, guarded: should accounting itself fail, the hold is released and an
    `error` record written (services.fail), and None returned."""
    try:
        return await _account(call, acc, result, **outcome)
    except Exception as exc:
        await services.fail(call, services.internal_error(exc))
        return None


def _chunk_base(acc: Accumulator) -> dict[str, Any]:
    return {
        "id": acc.meta.get("id", ""),
        "object": "chat.completion.chunk",
        "created": acc.meta.get("created", 0),
        "model": acc.meta.get("model", ""),
    }


async def _account(
    call: services.Call,
    acc: Accumulator,
    result: StreamResult,
    *,
    status: str,
    error_type: str = "",
) -> tuple[Usage, Cost]:
    usage = result.usage
    assert call.served is not None  # a stream is accounted once a model answered
    ceiling = services.usage_ceiling(call.served)
    if usage is None or not usage.reported or usage_problem(usage, ceiling) is not None:
        usage = Usage(
            input_tokens=call.prompt_tokens,
            output_tokens=tokens.estimate_text(acc.text()),
            reported=False,
        )
    cost = cost_of(usage, call.served.prices)
    details = result.details if usage.reported else None
    body = acc.completion(usage, details) if status == "ok" else None
    await services.finish(
        call, usage=usage, cost=cost, body=body, status=status, error_type=error_type
    )
    return usage, cost


async def cached_events(call: services.Call, hit: CachedAnswer) -> AsyncIterator[bytes]:
    request_id_var.set(call.request_id)
    assert call.operation is not None
    for chunk in replay_chunks(hit.body):
        yield sse(call.operation.client_chunk(call, chunk))
    if (call.body.get("stream_options") or {}).get("include_usage"):
        base = {
            "id": hit.body.get("id", ""),
            "object": "chat.completion.chunk",
            "created": hit.body.get("created", 0),
            "model": hit.body.get("model", ""),
        }
        for name in ("service_tier", "system_fingerprint"):
            if hit.body.get(name) is not None:
                base[name] = hit.body[name]
        details = usage_details(hit.body.get("usage") or {})
        usage_out = openai_usage(hit.usage, Cost(Decimal(0)), details)
        yield sse({**base, "choices": [], "usage": usage_out})
    yield DONE
