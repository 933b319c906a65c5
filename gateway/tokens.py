"""Token counts without a tokenizer: one typical estimate and one strict upper bound.

- `estimate_*` (about 4 characters a token, plus a few tokens of framing per message) is used
  when a provider reports no usage (the record is then marked `estimated`) and to decide
  whether a prompt fits a model's context window.
- `prompt_upper_bound` is used to reserve budget. Byte-level BPE tokenizers (OpenAI's,
  Anthropic's, Llama's) never produce more tokens than UTF-8 bytes, so bytes + framing can
  over-reserve but never under-reserve: that is what keeps a hard budget from being overspent.
"""

from __future__ import annotations

from typing import Any

import orjson

PER_MESSAGE_OVERHEAD = 4
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 2000  # an image is billed by its size, not by the bytes of its URL
# The system prompt a provider adds when a request gives tools, which the request's bytes do
# not show: Claude's tool-use prompt is 346 tokens (Claude 4), and a chat `response_format`
# reaches Claude as a forced tool. Generously, per request.
TOOL_PROMPT_TOKENS = 1000


def prompt_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    parts.append(part["text"])
        if m.get("tool_calls"):
            parts.append(orjson.dumps(m["tool_calls"]).decode())
    return "\n".join(parts)


def estimate_text(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_prompt(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    tokens = estimate_text(prompt_text(messages)) + PER_MESSAGE_OVERHEAD * len(messages)
    if body.get("tools"):
        tokens += estimate_text(orjson.dumps(body["tools"]).decode())
    return tokens


def prompt_upper_bound(body: dict[str, Any]) -> int:
    """Never fewer than the tokens the prompt will be billed for (see the module docstring).

    Images are billed by size, not bytes of URL; each counts as a generous IMAGE_TOKENS.
    Tools and a response format's schema are part of the prompt: their bytes count, plus
    TOOL_PROMPT_TOKENS for the tool-use prompt the provider adds.
    """
    messages = body.get("messages") or []
    size = len(orjson.dumps(messages))
    tools, response_format = body.get("tools"), body.get("response_format")
    if tools:
        size += len(orjson.dumps(tools))
    if isinstance(response_format, dict) and response_format.get("type") != "text":
        size += len(orjson.dumps(response_format))
    if tools or (isinstance(response_format, dict) and "json_schema" in response_format):
        size += TOOL_PROMPT_TOKENS
    images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
    return size + PER_MESSAGE_OVERHEAD * len(messages) + IMAGE_TOKENS * images
