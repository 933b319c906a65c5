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

    Images are billed by size, not bytes of URL; each counts as a generous fixed 2,000 tokens.
    """
    messages = body.get("messages") or []
    size = len(orjson.dumps(messages))
    if body.get("tools"):
        size += len(orjson.dumps(body["tools"]))
    images = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
    return size + PER_MESSAGE_OVERHEAD * len(messages) + 2000 * images
