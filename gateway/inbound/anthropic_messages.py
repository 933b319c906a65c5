"""Anthropic's Messages API (POST /v1/messages) as the client sends it: passed through
natively to Anthropic-kind models, translated to an OpenAI chat request for the others.

Every request is also translated to chat (`to_chat`): that is what the pipeline reads
(routing, estimates, the cache key, the ledger), and what an OpenAI-kind model is sent. On
an Anthropic-kind model the client's own body is sent instead (`Native`, with only the
model set by the gateway) with its `anthropic-beta` header, and its answer, JSON or every
stream event, comes back as Claude gave it: server-side content such as citations is kept.

What chat cannot carry (`anthropic_native.split_native`: top_k, context_management, document and
search_result blocks, tool results with images, Anthropic-defined client tools such as
bash or text_editor, beta headers) is taken out of the translation and listed: such a
request is served by Anthropic-kind models only; another model refuses it naming the
parameter (400, or skipped in a fallback chain), and it is not cached. What the gateway
cannot hold a budget for or price (server tools such as web_search, MCP servers, code
execution containers, service tiers, 1M-context betas) is refused with a 400 that says why.

In translation, prompt-cache breakpoints (`cache_control`) ride along on the chat parts,
messages and tools they were set on; extended `thinking` rides as the chat request's
`thinking` and past turns' signed blocks as `thinking_blocks`. See docs/compatibility.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError, InvalidRequest

# Top-level fields this endpoint honours; anything else gets a 400 naming it.
KNOWN = frozenset(
    {
        "model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences",
        "temperature", "top_p", "metadata", "stream", "thinking", "output_config",
    }
)  # fmt: skip
# Fields the gateway refuses on every model, and why (the 400 says it).
NOT_TRANSLATABLE = {
    "service_tier": "the gateway routes by its own priorities (X-Gateway-Priority)",
    "container": "code execution containers are billed by the hour, which the gateway cannot price",
    "mcp_servers": "remote MCP tool results add input tokens that no budget hold can bound",
}
SERVER_TOOLS = ("web_search_", "web_fetch_", "code_execution_", "tool_search_tool_")
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{param}` is not supported on /v1/messages: {why}. Remove it and send the request again.",
        param=param,
        code="unsupported_parameter",
    )


def to_chat(data: Any, *, count_only: bool = False) -> dict[str, Any]:
    """The OpenAI chat request for an Anthropic Messages request (`count_only`: for
    count_tokens, where `max_tokens` is not asked for)."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in data:
        if name in NOT_TRANSLATABLE:
            raise unsupported(name, NOT_TRANSLATABLE[name])
        if name not in KNOWN:
            raise unsupported(name, "the gateway does not know this field")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Field required (a non-empty string).", param="model")
    chat: dict[str, Any] = {"model": model, "messages": _system(data.get("system"))}
    max_tokens = data.get("max_tokens")
    if not count_only or max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidRequest("max_tokens: a positive integer is required.", param="max_tokens")
        chat["max_tokens"] = max_tokens
    chat["messages"] += _messages(data.get("messages"))
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            chat[name] = data[name]
    _thinking(data.get("thinking"), chat)
    _output_config(data.get("output_config"), chat)
    _stop(data.get("stop_sequences"), chat)
    _tools(data.get("tools"), data.get("tool_choice"), chat)
    user = (
        (data.get("metadata") or {}).get("user_id")
        if isinstance(data.get("metadata"), dict)
        else None
    )
    if user is not None:
        chat["user"] = user
    if data.get("stream") and not count_only:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _cache_control(block: dict[str, Any], target: dict[str, Any], at: str) -> dict[str, Any]:
    """Carry a block's prompt-cache breakpoint over to the chat part, message or tool made
    of it (an object, as Anthropic takes it: {"type": "ephemeral", "ttl": "5m"})."""
    if "cache_control" in block:
        mark = block["cache_control"]
        if not isinstance(mark, dict) or not isinstance(mark.get("type"), str):
            raise InvalidRequest(
                f'{at}.cache_control: an object such as {{"type": "ephemeral"}}.',
                param=f"{at}.cache_control",
            )
        target["cache_control"] = mark
    return target


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        if any("cache_control" in b for b in system):  # blocks kept, each with its mark
            parts = [
                _cache_control(b, {"type": "text", "text": b["text"]}, f"system.{i}")
                for i, b in enumerate(system)
            ]
            return [{"role": "system", "content": parts}]
        text = "\n\n".join(b["text"] for b in system)
        return [{"role": "system", "content": text}] if text else []
    raise InvalidRequest("system: a string or a list of text blocks.", param="system")


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty list is required.", param="messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"{where}.role: Unexpected role. Allowed roles are 'user' or 'assistant'.",
                param=f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif isinstance(content, list):
            if message["role"] == "user":
                out += _user_blocks(content, where)
            else:
                out.append(_assistant_blocks(content, where))
        else:
            raise InvalidRequest(
                f"{where}.content: a string or a list of content blocks.",
                param=f"{where}.content",
            )
    return out


def _block_type(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}: a content block with a 'type'.", param=where)
    return kind


def _user_blocks(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages (first, as chat wants them right after the
    assistant's calls), the rest one user message of parts."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = _block_type(block, at)
        if kind == "tool_result":
            results.append(_cache_control(block, _tool_result(block, at), at))
        elif kind in ("text", "image"):
            parts.append(_cache_control(block, _part(block, kind, at), at))
        else:
            raise unsupported(f"{at}.type", f"content blocks of type '{kind}' are not translated")
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _part(block: dict[str, Any], kind: str, at: str) -> dict[str, Any]:
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{at}.text: a string is required.", param=f"{at}.text")
        return {"type": "text", "text": block["text"]}
    given = block.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(
            f"{at}.source: an image source of type 'base64' (with media_type and data) or 'url'.",
            param=f"{at}.source",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], at: str) -> dict[str, Any]:
    if not isinstance(block.get("tool_use_id"), str):
        raise InvalidRequest(f"{at}.tool_use_id: a string is required.", param=f"{at}.tool_use_id")
    content = block.get("content", "")
    if isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            if _block_type(inner, f"{at}.content.{k}") != "text":
                raise unsupported(
                    f"{at}.content.{k}.type", "a tool result is passed on as text only"
                )
            texts.append(str(inner.get("text", "")))
        content = "".join(texts)
    elif not isinstance(content, str):
        raise InvalidRequest(f"{at}.content: a string or text blocks.", param=f"{at}.content")
    if block.get("is_error"):
        content = f"Error: {content}"  # chat has no is_error: said in the text, as agents do
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}


def _assistant_blocks(blocks: list[Any], where: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    thoughts: list[dict[str, Any]] = []
    mark: dict[str, Any] = {}
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = _block_type(block, at)
        if isinstance(block, dict) and "cache_control" in block:
            if j != len(blocks) - 1:  # chat joins an assistant turn's text: only its end
                raise unsupported(
                    f"{at}.cache_control",
                    "in an assistant turn a cache breakpoint is passed on on its last block only",
                )
            _cache_control(block, mark, at)
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind in ("thinking", "redacted_thinking"):
            thoughts.append(_thought(block, kind, at))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidRequest(f"{at}: a tool_use block needs an id and a name.", param=at)
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": arguments},
                }
            )
        else:
            raise unsupported(f"{at}.type", f"content blocks of type '{kind}' are not translated")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if thoughts:
        message["thinking_blocks"] = thoughts
    return {**message, **mark}


def _thinking(thinking: Any, chat: dict[str, Any]) -> None:
    """Extended thinking rides on the chat request as `thinking` (as LiteLLM takes it): an
    Anthropic-kind model gets it as sent; an OpenAI-kind model refuses it (400, or skipped
    in a fallback chain), since its reasoning is asked for differently."""
    if thinking is None:
        return
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise InvalidRequest(
            'thinking: an object such as {"type": "enabled", "budget_tokens": 2048}.',
            param="thinking",
        )
    if thinking["type"] != "disabled":
        chat["thinking"] = thinking


def _thought(block: dict[str, Any], kind: str, at: str) -> dict[str, Any]:
    """A past turn's thinking or redacted_thinking block, kept whole (Claude checks its
    signature when it comes back)."""
    names = ("thinking", "signature") if kind == "thinking" else ("data",)
    for name in names:
        if not isinstance(block.get(name), str):
            raise InvalidRequest(f"{at}.{name}: a string is required.", param=f"{at}.{name}")
    return {"type": kind, **{name: block[name] for name in names}}


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    """Structured output (`output_config.format`, what `messages.parse` sends) becomes chat's
    `response_format` json_schema; `effort` has no translation."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidRequest("output_config: an object.", param="output_config")
    for name, value in config.items():
        if value is None:
            continue
        if name != "format":
            raise unsupported(f"output_config.{name}", "it has no chat equivalent")
        if not (
            isinstance(value, dict)
            and value.get("type") == "json_schema"
            and isinstance(value.get("schema"), dict)
        ):
            raise InvalidRequest(
                "output_config.format: an object of type 'json_schema' with a 'schema'.",
                param="output_config.format",
            )
        schema = {"name": "output", "schema": value["schema"]}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}


def _stop(stop: Any, chat: dict[str, Any]) -> None:
    if stop is None:
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("stop_sequences: a list of strings.", param="stop_sequences")
    if len(stop) > 4:
        raise unsupported("stop_sequences", "at most 4 stop sequences are passed on")
    if stop:
        chat["stop"] = stop


def _tools(tools: Any, choice: Any, chat: dict[str, Any]) -> None:
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: a list of tools.", param="tools")
        chat["tools"] = [_tool(t, f"tools.{i}") for i, t in enumerate(tools)]
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in ("auto", "any", "none"):
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise InvalidRequest(
            "tool_choice: an object of type 'auto', 'any', 'tool' (with a name) or 'none'.",
            param="tool_choice",
        )
    if choice.get("disable_parallel_tool_use") and chat.get("tools"):
        chat["parallel_tool_calls"] = False


def _tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"{at}: a tool with a name.", param=at)
    kind = tool.get("type")
    if isinstance(kind, str) and kind.startswith(SERVER_TOOLS):
        raise unsupported(
            f"{at}.type",
            f"server tools ('{kind}') are billed per use and add input tokens that the gateway "
            "can neither price nor hold a budget for",
        )
    if kind not in (None, "custom"):
        raise unsupported(f"{at}.type", f"tools of type '{kind}' are not known to the gateway")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"{at}.input_schema: a JSON Schema object.", param=f"{at}.input_schema"
        )
    fn: dict[str, Any] = {"name": tool["name"], "parameters": schema}
    if tool.get("description") is not None:
        if not isinstance(tool["description"], str):
            raise InvalidRequest(f"{at}.description: a string.", param=f"{at}.description")
        fn["description"] = tool["description"]
    return _cache_control(tool, {"type": "function", "function": fn}, at)


def from_chat(body: dict[str, Any], *, message_id: str) -> dict[str, Any]:
    """The Anthropic message for a whole chat.completion."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = [
        {k: v for k, v in b.items() if k != "index"} for b in message.get("thinking_blocks") or ()
    ]
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    if message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": fn.get("name") or "",
                "input": tool_input(fn.get("arguments")),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or "",
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage(body.get("usage") or {}),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as tool_use `input` (an object). Arguments that are not a
    JSON object are kept, as the one value of `arguments`."""
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def usage(chat_usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's usage for chat usage: its input_tokens exclude the cache reads and writes
    (chat's prompt_tokens include them)."""
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached - written, 0),
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def error_body(error: GatewayError, request_id: str) -> dict[str, Any]:
    """Anthropic's error shape for a gateway error (the status stays the gateway's)."""
    message = error.message
    upstream = error.body().get("error") or {}
    if isinstance(upstream, dict) and upstream.get("message"):
        message = str(upstream["message"])
    kind = ERROR_TYPES.get(error.status) or ("api_error" if error.status >= 500 else "")
    return {
        "type": "error",
        "error": {"type": kind or "invalid_request_error", "message": message},
        "request_id": request_id,
    }
