"""OpenAI's Responses API (POST /v1/responses) as the client sends it: passed through
natively to OpenAI-kind models, translated to an OpenAI chat request for the others.

Every request is also translated to chat (`to_chat`): that is what the pipeline reads
(routing, estimates, the cache key, the ledger) and what other kinds are sent. On an
OpenAI-kind model (kind `openai`, whose /responses is OpenAI's own) the client's body is
sent instead (`Native`), and its answer, JSON or every stream event, comes back as OpenAI
gave it. What chat cannot carry (`split_native`: reasoning input items, `include`,
`truncation: "auto"`, `reasoning.summary`, `top_logprobs`, `text.verbosity`) is served by
OpenAI-kind models only; another model refuses it by name, and it is not cached.

Responses are not stored: `store` is false (also on what is passed through), and
`store: true`, `previous_response_id` and item references get a 400 that says so (send the
whole conversation in `input` instead). Built-in tools are refused: billed per call, and
their results add input tokens no budget hold can bound.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest
from gateway.inbound.bridge import Translated
from gateway.providers.base import Native
from gateway.tokens import IMAGE_TOKENS, PER_MESSAGE_OVERHEAD, TOOL_PROMPT_TOKENS

KNOWN = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens",
        "temperature", "top_p", "stream", "store", "parallel_tool_calls", "metadata", "user",
        "reasoning", "safety_identifier", "prompt_cache_key", "service_tier", "truncation",
        "include", "stream_options", "top_logprobs",
    }
)  # fmt: skip
# What only OpenAI's own Responses API serves, and why chat cannot carry it.
NATIVE_ONLY = "chat has no equivalent"
NOT_STORED = (
    "this gateway does not keep responses (store is false); send the whole conversation in "
    "`input`, with the earlier output items and function_call_output items"
)
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# A chat parameter as the Responses API names it, for an error the chat pipeline raised.
RESPONSES_NAMES = {
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "messages": "input",
}


def renamed(error: GatewayError) -> GatewayError:
    """`error` naming the parameter the client sent on /v1/responses, not its chat name."""
    name = (error.param or "").split("[", 1)[0].split(".", 1)[0]
    if name in RESPONSES_NAMES:
        ours = RESPONSES_NAMES[name]
        error.message = error.message.replace(f"`{name}`", f"`{ours}`")
        error.param = ours + (error.param or "")[len(name) :] if name != "messages" else ours
    return error


def unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{param}` is not supported on /v1/responses: {why}.",
        param=param,
        code="unsupported_parameter",
    )


def split_native(data: Any) -> tuple[Any, list[tuple[str, str]]]:
    """(the request without what chat cannot carry, what was taken out as (parameter, why))."""
    if not isinstance(data, dict):
        return data, []
    out = {k: v for k, v in data.items() if v is not None}
    only: list[tuple[str, str]] = []
    for name in ("include", "top_logprobs"):
        if out.get(name):
            only.append((name, NATIVE_ONLY))
        out.pop(name, None)
    if out.get("truncation") == "auto":
        only.append(("truncation", "chat cannot truncate a conversation"))
        out.pop("truncation")
    for name in ("reasoning", "text"):
        value = out.get(name)
        keep = "effort" if name == "reasoning" else "format"
        if isinstance(value, dict) and any(k != keep and value[k] is not None for k in value):
            extra = next(k for k in value if k != keep and value[k] is not None)
            only.append((f"{name}.{extra}", NATIVE_ONLY))
            out[name] = {k: v for k, v in value.items() if k == keep}
    items = out.get("input")
    if isinstance(items, list):
        kept = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "reasoning":
                only.append((f"input[{i}].type", "reasoning items are OpenAI's own"))
            else:
                kept.append(item)
        out["input"] = kept or items  # none but reasoning: to_chat says what is wrong
    return out, only


def passthrough(data: Any) -> Translated:
    """A Responses request as the pipeline takes it: its chat translation (without what chat
    cannot carry) and the request itself, to pass through to OpenAI-kind models."""
    stripped, only = split_native(data)
    chat = to_chat(stripped)  # refuses what no model is sent, and anything not an object
    return Translated(chat, Native("openai", dict(data), {}, only), native_bound(data))


def native_bound(data: dict[str, Any]) -> int:
    """The most input tokens a Responses body can be billed for: its bytes, its images, and
    the tool-use prompt when it gives tools or a schema."""
    parts = {name: data.get(name) for name in ("instructions", "input", "tools", "text")}
    items = data.get("input")
    count = len(items) if isinstance(items, list) else 1
    bound = len(orjson.dumps(parts)) + PER_MESSAGE_OVERHEAD * (count + 1)
    images = 0
    stack: list[Any] = [items]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack += item
        elif isinstance(item, dict):
            images += item.get("type") == "input_image"
            stack += [v for v in item.values() if isinstance(v, list | dict)]
    if data.get("tools") or (data.get("text") or {}).get("format"):
        bound += TOOL_PROMPT_TOKENS
    return bound + IMAGE_TOKENS * images


def to_chat(data: Any) -> dict[str, Any]:
    """The OpenAI chat request for a Responses API request."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    data = {k: v for k, v in data.items() if v is not None}
    if "previous_response_id" in data:
        raise unsupported("previous_response_id", NOT_STORED)
    if data.get("store"):
        raise unsupported("store", NOT_STORED)
    for name in data:
        if name not in KNOWN:
            raise unsupported(name, "the gateway does not translate this parameter")
    if data.get("truncation", "disabled") != "disabled":
        raise unsupported("truncation", "only 'disabled' is served")
    if data.get("include"):
        raise unsupported("include", "no extra output data is served")
    chat: dict[str, Any] = {"model": data.get("model", "auto"), "messages": []}
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string.", param="instructions")
        chat["messages"].append({"role": "system", "content": instructions})
    chat["messages"] += _input(data.get("input"))
    if "max_output_tokens" in data:
        limit = data["max_output_tokens"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidRequest(
                "'max_output_tokens' must be a positive integer.", param="max_output_tokens"
            )
        chat["max_completion_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata", "user"):
        if name in data:
            chat[name] = data[name]
    for name in ("safety_identifier", "prompt_cache_key", "service_tier"):
        if name in data:
            chat[name] = data[name]
    reasoning = data.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    elif reasoning not in (None, {}):
        raise unsupported("reasoning", "only `reasoning.effort` is passed on")
    _tools(data.get("tools"), data.get("tool_choice"), chat)
    _text(data.get("text"), chat)
    if data.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string or a non-empty list of items.", param="input"
        )
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{at}' must be an object.", param=at)
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, at))
        elif kind == "function_call":
            _function_call(item, at, out)
        elif kind == "function_call_output":
            out.append(_function_output(item, at))
        elif kind == "item_reference":
            raise unsupported(f"{at}.type", f"item references need stored responses: {NOT_STORED}")
        else:
            raise unsupported(f"{at}.type", f"input items of type '{kind}' are not translated")
    return out


ROLES = ("user", "system", "developer", "assistant")


def _message(item: dict[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"'{at}.role' must be one of {', '.join(ROLES)}.", param=f"{at}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(
            f"'{at}.content' must be a string or a list of parts.", param=f"{at}.content"
        )
    parts = [_part(p, f"{at}.content[{j}]") for j, p in enumerate(content)]
    if role == "assistant":  # chat's assistant content is text (and refusals)
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, at: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        if part.get("file_id"):
            raise unsupported(f"{at}.file_id", "uploaded files are not served; send image_url")
        if not isinstance(part.get("image_url"), str):
            raise InvalidRequest(f"'{at}.image_url' must be a URL or data: URI.", param=at)
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") and part["detail"] != "auto":
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise unsupported(f"{at}.type", f"content parts of type {kind!r} are not translated")


def _function_call(item: dict[str, Any], at: str, out: list[dict[str, Any]]) -> None:
    """Consecutive function_call items are one assistant turn with several tool calls."""
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise InvalidRequest(f"'{at}.{name}' must be a string.", param=f"{at}.{name}")
    call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)
    elif last is not None and last["role"] == "assistant" and isinstance(last["content"], str):
        last["tool_calls"] = [call]  # the text the model said before its calls
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output(item: dict[str, Any], at: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise InvalidRequest(f"'{at}.call_id' must be a string.", param=f"{at}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(
            p.get("text", "")
            for p in output
            if isinstance(p, dict) and p.get("type") == "input_text"
        )
    if not isinstance(output, str):
        raise InvalidRequest(f"'{at}.output' must be a string.", param=f"{at}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _tools(tools: Any, choice: Any, chat: dict[str, Any]) -> None:
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools")
        chat["tools"] = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise unsupported(
                    f"tools[{i}].type", f"only function tools are served, not {kind!r}"
                )
            if not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"'tools[{i}].name' must be a string.", param=f"tools[{i}]")
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            chat["tools"].append({"type": "function", "function": fn})
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
    ):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise unsupported("tool_choice", "only auto, none, required or a function is served")


def _text(text: Any, chat: dict[str, Any]) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object.", param="text")
    extra = [k for k in text if k != "format"]
    if extra:
        raise unsupported(f"text.{extra[0]}", "only text.format is passed on")
    fmt = text.get("format")
    if fmt is not None and not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object.", param="text.format")
    if fmt is None or fmt.get("type") == "text":
        return
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise InvalidRequest(
            "'text.format.type' must be text, json_object or json_schema.", param="text.format"
        )


def from_chat(body: dict[str, Any], request: dict[str, Any], *, response_id: str) -> dict[str, Any]:
    """The `response` object for a whole chat.completion; `request`: the client's request."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    content = []
    if message.get("content"):
        content.append(output_text(message["content"]))
    if message.get("refusal"):
        content.append({"type": "refusal", "refusal": message["refusal"]})
    if content:
        output.append(message_item(f"msg_{response_id[5:]}", content))
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") or {}
        output.append(
            function_item(f"fc_{response_id[5:]}_{i}", call.get("id") or "", fn, "completed")
        )
    finish = choice.get("finish_reason") or "stop"
    return envelope(
        request,
        response_id=response_id,
        model=body.get("model") or request.get("model") or "",
        status="incomplete" if finish in INCOMPLETE else "completed",
        output=output,
        usage=usage(body.get("usage") or {}),
        incomplete=INCOMPLETE.get(finish),
    )


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, content: list[dict[str, Any]], status: str = "completed") -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_item(item_id: str, call_id: str, fn: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": fn.get("name") or "",
        "arguments": fn.get("arguments") or "",
        "status": status,
    }


def usage(chat_usage: dict[str, Any]) -> dict[str, Any]:
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    output = int(chat_usage.get("completion_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)  # the spec requires the count
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    out = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + output,
    }
    if chat_usage.get("cost_usd") is not None:  # the gateway's extension, as on chat streams
        out["cost_usd"] = chat_usage["cost_usd"]
    return out


def echo_tool(tool: Any) -> Any:
    """A function tool as the response echoes it: with `parameters` and `strict`, which the
    spec's FunctionTool requires (not sent: no parameters, and not strict, as chat runs it)."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"parameters": None, "strict": False, **tool}
    return tool


def envelope(
    request: dict[str, Any],
    *,
    response_id: str,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `response` object, with the request's parameters echoed as the API does."""
    text = request.get("text") or {"format": {"type": "text"}}
    # Only when known: the spec's Response has `user` a string and `usage` an object,
    # never null (a response in progress has no usage yet).
    optional = {"user": request.get("user"), "usage": usage}
    known = {name: value for name, value in optional.items() if value is not None}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": request.get("temperature"),
        "text": text,
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [echo_tool(tool) for tool in request.get("tools") or []],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        **known,
        "metadata": request.get("metadata") or {},
    }
