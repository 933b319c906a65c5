"""What of an Anthropic Messages request only an Anthropic-kind model can serve, and the
request as the pipeline takes it when it is passed through (see anthropic_messages.py):
its chat translation without those parts, the client's own body, and the most input tokens
that body can be billed for."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.inbound.anthropic_messages import to_chat
from gateway.inbound.bridge import Translated
from gateway.providers.base import Native
from gateway.tokens import IMAGE_TOKENS, PER_MESSAGE_OVERHEAD, TOOL_PROMPT_TOKENS

# Fields only an Anthropic-kind model can serve: passed through to one, refused by others.
NATIVE_FIELDS = {
    "top_k": "chat has no top_k",
    "context_management": "context management is Anthropic-only",
}
# Anthropic-defined tools that the client runs (bash, text_editor, computer, memory):
# passed through natively. Server tools run by Anthropic add searches, fetches or container
# time that the gateway cannot price, and input tokens no budget hold can bound: refused.
CLIENT_TOOLS = ("bash_", "text_editor_", "computer_", "memory_")
NATIVE_BLOCKS = {
    "document": "documents are Anthropic-only",
    "search_result": "search results are Anthropic-only",
}
PDF_SOURCES = ("base64", "url", "file")  # a document's tokens not bounded by its bytes
# Input tokens an Anthropic-defined tool adds that its few bytes do not show (its schema and
# system prompt: 245 for bash, about 1,250 for computer use): generously, per tool.
DEFINED_TOOL_TOKENS = 2000


def split_native(data: Any) -> tuple[Any, list[tuple[str, str]]]:
    """(the request without what chat cannot carry, what was taken out as (parameter, why)).

    A document or search_result block is replaced by a placeholder text part, a tool result
    keeps its text: the translation is then still a well-formed chat request, for the
    pipeline to read and for no model to be sent (every other kind refuses it)."""
    if not isinstance(data, dict):
        return data, []
    only = [(name, why) for name, why in NATIVE_FIELDS.items() if name in data]
    out = {k: v for k, v in data.items() if k not in NATIVE_FIELDS}
    config = data.get("output_config")
    if isinstance(config, dict):  # its format is translated; effort and the rest are not
        for name in config:
            if name != "format" and config[name] is not None:
                only.append((f"output_config.{name}", f"chat has no {name}"))
        out["output_config"] = {k: v for k, v in config.items() if k == "format"}
    tools = data.get("tools")
    if isinstance(tools, list):
        kept = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind.startswith(CLIENT_TOOLS):
                why = f"Anthropic-defined tools ('{kind}') are Anthropic-only"
                only.append((f"tools.{i}.type", why))
            else:
                kept.append(tool)
        if kept:
            out["tools"] = kept
        else:
            out.pop("tools")
            out.pop("tool_choice", None)
    messages = data.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_split(m, f"messages.{i}", only) for i, m in enumerate(messages)]
    return out, only


def _split(message: Any, where: str, only: list[tuple[str, str]]) -> Any:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    content: list[Any] = []
    for j, block in enumerate(message["content"]):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        kind = kind if isinstance(kind, str) else None  # a malformed type is the schema's to refuse
        inner = block.get("content") if isinstance(block, dict) else None
        if kind in NATIVE_BLOCKS:
            only.append((f"{at}.type", NATIVE_BLOCKS[kind]))
            content.append({"type": "text", "text": f"[{kind}]"})
        elif kind == "tool_result" and isinstance(inner, list) and not all(map(_is_text, inner)):
            why = "a tool result with images or documents is Anthropic-only"
            only.append((f"{at}.content", why))
            content.append({**block, "content": [b for b in inner if _is_text(b)]})
        else:
            content.append(block)
    return {**message, "content": content}


def _is_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text"


def native_bound(data: dict[str, Any]) -> tuple[int, bool]:
    """(the most input tokens the Anthropic body can be billed for, judged from its bytes,
    its images and its Anthropic-defined tools; whether it holds PDF documents, whose tokens
    follow no byte count: their hold is the model's whole context window)."""
    parts = {name: data.get(name) for name in ("system", "messages", "tools")}
    bound = len(orjson.dumps(parts)) + PER_MESSAGE_OVERHEAD * len(data.get("messages") or ())
    images, pdfs = 0, False
    stack: list[Any] = [data.get("messages"), data.get("system")]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack += item
        elif isinstance(item, dict):
            kind, source = item.get("type"), item.get("source")
            images += kind == "image"
            if kind == "document" and isinstance(source, dict):
                pdfs = pdfs or source.get("type") in PDF_SOURCES
            stack += [v for v in item.values() if isinstance(v, list | dict)]
    tools = data.get("tools") or ()
    config = data.get("output_config")
    bound += len(orjson.dumps(config)) if config else 0
    bound += TOOL_PROMPT_TOKENS if tools or config else 0
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        bound += DEFINED_TOOL_TOKENS if isinstance(kind, str) and kind != "custom" else 0
    return bound + IMAGE_TOKENS * images, pdfs


def passthrough(data: Any, beta: str | None = None) -> Translated:
    """A Messages request as the pipeline takes it: its chat translation (without what chat
    cannot carry) and the request itself, to pass through to Anthropic-kind models with its
    `anthropic-beta` header (`beta`)."""
    stripped, only = split_native(data)
    chat = to_chat(stripped)  # refuses what no model is sent, and anything not an object
    headers: dict[str, str] = {}
    if beta:
        headers["anthropic-beta"] = beta
        only.append(("anthropic-beta", "beta features are Anthropic-only"))
    bound, pdfs = native_bound(data)
    return Translated(chat, Native("anthropic", dict(data), headers, only), bound, pdfs)
