"""Pure translation between OpenAI's chat format and Anthropic's Messages format (no I/O)."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from gateway.providers.base import (
    ChatRequest,
    ProviderError,
    Usage,
    asked,
    prompt_details,
    token_count,
)

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
    system_blocks: list[dict[str, Any]] = []  # the same, as blocks: kept for cache_control
    messages: list[dict[str, Any]] = []
    for message in body["messages"]:
        if message["role"] in ("system", "developer"):
            system.append(_text_of(message.get("content")))
            system_blocks += _system_blocks(message)
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
    if any("cache_control" in b for b in system_blocks):
        out["system"] = system_blocks  # a prompt-cache breakpoint in the system prompt
    elif system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1: `refusals` turns away anything above 1.
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("stop"):
        out["stop_sequences"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"] if t.get("type") == "function"]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice and out.get("tools"):
        out["tool_choice"] = choice
    structured = structured_tool(body)
    if structured is not None:
        _add_structured(out, structured, body.get("tool_choice"))
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if isinstance(body.get("thinking"), dict):
        out["thinking"] = body["thinking"]  # extended thinking, as Anthropic takes it
    return out


def _add_structured(out: dict[str, Any], structured: dict[str, Any], choice: Any) -> None:
    """Structured output: a tool whose input is the answer (see `structured_tool`).

    Alone, it is forced. With the request's own tools the model must call one tool: one of
    those (answered as tool_calls) or the answer's (answered as JSON content), one per turn,
    as OpenAI lets a model call tools or answer in the schema. A `tool_choice` of "required"
    or a named function asks for a tool call, not the answer: the answer's tool is not offered.
    """
    if not out.get("tools") or choice == "none":
        out["tools"] = [structured]
        out["tool_choice"] = {"type": "tool", "name": structured["name"]}
    elif choice in (None, "auto"):
        out["tools"] = [*out["tools"], structured]
        out["tool_choice"] = {"type": "any", "disable_parallel_tool_use": True}


STRUCTURED_FORMATS = ("json_schema", "json_object")
_TOOL_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")
# Chat parameters Anthropic's Messages API has no equivalent for.
UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "reasoning_effort",
    "prediction",
    "audio",
    "web_search_options",
)


def structured_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The forced tool that carries a `response_format` json_schema / json_object request,
    or None. Claude is made to call it; its `input` (an object that follows the schema)
    becomes the message content as JSON text, so the client cannot tell the difference."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in STRUCTURED_FORMATS:
        return None
    schema: dict[str, Any]
    if fmt["type"] == "json_object":
        name, schema, description = "json_object", {"type": "object"}, ""
    else:
        given = fmt.get("json_schema")
        spec: dict[str, Any] = given if isinstance(given, dict) else {}
        name = str(spec.get("name") or "json_schema")
        given_schema = spec.get("schema")
        schema = given_schema if isinstance(given_schema, dict) and given_schema else {}
        schema = schema or {"type": "object"}
        description = str(spec.get("description") or "")
    tool = {
        "name": _TOOL_NAME_BAD.sub("_", name)[:64],
        "description": description or "Give the answer as this tool's input.",
        "input_schema": schema,
    }
    return tool


def refusals(body: dict[str, Any]) -> dict[str, str]:
    """What in an OpenAI request Anthropic cannot honour: {parameter: phrase}, where the
    phrase ends "`parameter`<phrase> by model M (anthropic)" (see services.refusal_message).
    Nothing is dropped or clamped here: the gateway refuses, skips the model, or drops the
    parameters the model's `drop_params` lists before asking."""
    out = {name: "" for name in UNSUPPORTED if asked(body, name)}
    if (body.get("n") or 1) > 1:
        out["n"] = f" {body['n']} (more than one choice) is not supported"
    if any(t.get("type") != "function" for t in body.get("tools") or []):
        out["tools"] = " other than function tools (custom tools) are not supported"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") != "function":
        out["tool_choice"] = f" of type {choice.get('type')!r} is not supported"
    thinking = body.get("thinking")
    if asked(body, "thinking") and not isinstance(thinking, dict):
        out["thinking"] = (
            ' that is not an object (such as {"type": "enabled", ...}) is not supported'
        )
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        out["temperature"] = f" {temperature} is outside the range 0..1 accepted"
    structured = structured_tool(body)
    if structured is not None:
        names = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        if structured["name"] in names:
            out["response_format"] = (
                f" named {structured['name']!r} like one of the request's tools is not supported"
            )
        elif structured["input_schema"].get("type") != "object":
            out["response_format"] = " with a schema whose root is not an object is not supported"
    return out


def response_to_openai(data: dict[str, Any], structured: str | None = None) -> dict[str, Any]:
    """An OpenAI chat.completion body for an Anthropic message.

    `structured`: the name of the forced tool of a structured-output request; its input is
    the message content (JSON text) and its `tool_use` stop is a plain "stop"."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    answer = None
    for block in data["content"]:
        if block["type"] == "text":
            text.append(block["text"])
        elif block["type"] in THINKING_FIELDS:
            thoughts.append(thinking_block(block))
        elif block["type"] == "tool_use" and structured and block["name"] == structured:
            answer = orjson.dumps(block["input"]).decode()
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
    stop_reason = data.get("stop_reason") or ""
    if answer is not None:
        text = [answer]  # a forced tool's call comes without prose
        stop_reason = "end_turn" if stop_reason == "tool_use" else stop_reason
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) or (None if calls else ""),
        "refusal": None,  # required by OpenAI's spec; Claude's refusals are content_filter
    }
    if calls:
        message["tool_calls"] = calls
    if thoughts:  # as LiteLLM gives them: the text, and the signed blocks to send back
        message["reasoning_content"] = "".join(t.get("thinking", "") for t in thoughts)
        message["thinking_blocks"] = thoughts
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
                "finish_reason": FINISH_REASONS.get(stop_reason, "stop"),
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
        "prompt_tokens_details": prompt_details(usage),
    }


THINKING_FIELDS = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}


def thinking_block(block: Any) -> dict[str, Any]:
    """A thinking or redacted_thinking block as Anthropic takes it (from a chat message's
    `thinking_blocks`, which may carry a stream's `index`)."""
    if not isinstance(block, dict) or block.get("type") not in THINKING_FIELDS:
        raise ValueError("a thinking block is not a thinking or redacted_thinking object")
    kind = block["type"]
    return {"type": kind, **{k: block.get(k, "") for k in THINKING_FIELDS[kind]}}


def _system_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A system message as text blocks, each with its part's `cache_control`."""
    blocks = [
        _cached({"type": "text", "text": p.get("text", "")}, p)
        for p in _parts(message.get("content"))
        if p.get("type") == "text"
    ]
    return _cached_last(blocks, message)


def _cached(block: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """`block` with the prompt-cache breakpoint (`cache_control`) of `source`, if it has one.

    Prompt caching, as Anthropic has it and as OpenAI-format clients send it to Claude
    (on a content part, a message or a tool, as LiteLLM takes it): the breakpoint goes to the
    block it was set on, and the cache read and write tokens are billed at their prices."""
    if "cache_control" in source:
        block["cache_control"] = source["cache_control"]
    return block


def _cached_last(blocks: list[dict[str, Any]], message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's own `cache_control` marks the end of the message: its last block."""
    if "cache_control" in message and blocks:
        blocks[-1]["cache_control"] = message["cache_control"]
    return blocks


def _message_blocks(message: dict[str, Any], provider: str) -> tuple[str, list[dict[str, Any]]]:
    role = message["role"]
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message["tool_call_id"],
            "content": _text_of(message.get("content")),
        }
        for part in _parts(message.get("content")):
            _cached(result, part)
        return "user", _cached_last([result], message)
    # A turn that thought: its signed thinking blocks go back first, as Claude wants them.
    try:
        blocks = [thinking_block(b) for b in message.get("thinking_blocks") or ()]
    except ValueError as exc:
        raise _invalid(provider, str(exc)) from None
    blocks += [_cached(_part(p, provider), p) for p in _parts(message.get("content"))]
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
    return role, _cached_last(blocks, message)


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


def _tool(given: dict[str, Any]) -> dict[str, Any]:
    fn = given["function"]
    tool = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        tool["description"] = fn["description"]
    return _cached(tool, given)


_TOOL_CHOICES: dict[str, dict[str, Any]] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if isinstance(choice, dict):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        named = _TOOL_CHOICES.get(choice or ("auto" if parallel is False else ""))
        out = dict(named) if named is not None else None
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
