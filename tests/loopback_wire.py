"""What the loopback servers share: the scripted `Behaviour` and the `Wire` base that
tests/loopback_openai.py and tests/loopback_anthropic.py implement for each real wire format.

Token counts are deterministic so tests can assert costs: prompt tokens = ceil(characters of
the messages' text / 4) unless the behaviour sets `prompt_tokens`; completion tokens = the
number of streamed pieces of the answer (one per word, plus the tool call's pieces).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import orjson

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One scripted answer. Build them with the helpers in tests.loopback (ok, fail, ...)."""

    status: int = 200
    text: str = "Hello from the loopback server."
    finish: str = "stop"  # OpenAI terms: stop, length, tool_calls
    delay: float = 0.0  # seconds before the status line
    usage: bool = True  # OpenAI only: include `usage` (Anthropic always reports it)
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # Anthropic only
    reasoning_tokens: int = 0  # OpenAI only: usage.completion_tokens_details.reasoning_tokens
    tool_call: tuple[str, dict[str, Any]] | None = None  # (function name, arguments)
    custom_call: tuple[str, str] | None = None  # OpenAI only: (custom tool name, input)
    logprobs: bool = True  # OpenAI only: answer `logprobs` when the request asks for them
    refusal: str | None = None  # OpenAI only: refuse with this text instead of answering
    garbage: bool = False  # a 200 whose body is an HTML page, not JSON nor SSE
    stall_after: int | None = None  # send this many SSE frames (or only the headers), then hang
    cut_after: int | None = None  # send this many SSE frames, then end the body early
    cut_abort: bool = True  # True: drop the TCP connection; False: end the chunked body cleanly
    error_after: int | None = None  # send this many SSE frames, then the provider's error event
    error_type: str | None = None  # override the error type of `status` / `error_after`
    message: str | None = None  # override the error message
    retry_after: float | None = None  # Retry-After header on an error answer
    dimensions: int = 1536  # OpenAI embeddings: a vector's length when `dimensions` is not sent


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def prompt_chars(body: dict[str, Any]) -> int:
    total = len(body.get("system") or "") if isinstance(body.get("system"), str) else 0
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


def pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]] if text else []


def args_pieces(args: dict[str, Any]) -> list[str]:
    raw = orjson.dumps(args).decode()
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


class Wire:
    """The parts of a provider's wire format the server needs. One subclass per provider."""

    path = ""
    base_path = ""
    error_types: dict[int, str] = {}
    # Other POST paths this provider answers with JSON: path -> the method that answers.
    other_paths: dict[str, str] = {}

    def check_other(
        self, path: str, headers: dict[str, str], body: Any, api_key: str | None
    ) -> tuple[int, str] | None:
        return None

    def counts(self, body: dict[str, Any], b: Behaviour) -> tuple[int, int]:
        prompt = (
            b.prompt_tokens if b.prompt_tokens is not None else math.ceil(prompt_chars(body) / 4)
        )
        extra = len(args_pieces(b.tool_call[1])) if b.tool_call else 0
        return prompt, len(pieces(b.text)) + extra

    def error_type(self, status: int, b: Behaviour) -> str:
        return b.error_type or self.error_types.get(status, self.error_types[500])
