"""A built-in provider with no network, for demos, load tests and the gateway's own tests.

The answer is a function of the messages (same request, same words), and so are the token
counts, estimated as ceil(characters / 4) of the messages' text (input) and of the answer
(output): deterministic, so a test can compute the cost it expects.

Options (Provider.options): `latency_ms` before the first byte (default 20), `chunk_delay_ms`
between streamed words (default 0), `failure_rate` 0..1 of calls that fail (default 0, drawn
with `random`), `fail_status` of those failures (default 503, mapped like a real answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.providers.base import (
    ChatRequest,
    Completion,
    ProviderAdapter,
    StreamResult,
    Usage,
    asked,
    error_from_response,
)
from gateway.providers.embeddings import EmbeddingRequest, Embeddings
from gateway.tokens import estimate_text, prompt_text

_WORDS = (
    "the gateway routes each request to a model within budget and records what it cost "
    "so every team can see its spend while fallbacks keep answers flowing when a provider "
    "slows down or fails under load"
).split()


class SimulatedAdapter(ProviderAdapter):
    kind = "simulated"
    label = "Simulated (built in, no network)"
    serves_embeddings = True

    def refusals(self, body: dict[str, Any]) -> dict[str, str]:
        """Its answer is a few words: no JSON, no log probabilities, no thinking, one
        choice."""
        names = ("response_format", "logprobs", "top_logprobs", "thinking")
        out = {name: "" for name in names if asked(body, name)}
        if (body.get("n") or 1) > 1:
            out["n"] = f" {body['n']} (more than one choice) is not supported"
        return out

    def _option(self, key: str, default: float) -> float:
        return float(self.config.options.get(key, default))

    async def _start(self) -> None:
        """Wait the configured latency, then maybe fail like an overloaded provider."""
        await asyncio.sleep(self._option("latency_ms", 20) / 1000)
        if random.random() < self._option("failure_rate", 0):
            status = int(self._option("fail_status", 503))
            body = {
                "error": {
                    "message": "simulated failure",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            raise error_from_response(self.config.name, status, orjson.dumps(body).decode())

    def _answer(self, request: ChatRequest) -> tuple[list[str], Usage, str]:
        """The answer's pieces (one per word), its usage and its finish reason."""
        key = orjson.dumps(request.messages, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(key).digest()
        words = [_WORDS[b % len(_WORDS)] for b in digest[1 : 9 + digest[0] % 24]]
        pieces = [words[0].capitalize()] + [" " + w for w in words[1:]] + ["."]
        finish = "stop"
        limit = request.max_tokens
        while limit and len(pieces) > 1 and estimate_text("".join(pieces)) > limit:
            pieces.pop()  # cut short like a real model at max_tokens
            finish = "length"
        usage = Usage(
            input_tokens=max(1, estimate_text(prompt_text(request.messages))),
            output_tokens=estimate_text("".join(pieces)),
        )
        return pieces, usage, finish

    def _id(self, request: ChatRequest) -> str:
        return "chatcmpl-sim" + hashlib.sha1(orjson.dumps(request.messages)).hexdigest()[:20]

    async def complete(self, request: ChatRequest) -> Completion:
        await self._start()
        pieces, usage, finish = self._answer(request)
        body = {
            "id": self._id(request),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.upstream_model or request.body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish,
                    "message": {
                        "role": "assistant",
                        "content": "".join(pieces),
                        "refusal": None,
                    },
                }
            ],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }
        return Completion(body=body, usage=usage)

    async def stream(
        self, request: ChatRequest, result: StreamResult
    ) -> AsyncIterator[dict[str, Any]]:
        await self._start()
        pieces, usage, finish = self._answer(request)
        delay = self._option("chunk_delay_ms", 0) / 1000
        base = {
            "id": self._id(request),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.upstream_model or request.body.get("model"),
        }
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces] + [{}]
        for i, delta in enumerate(deltas):
            if delay and i:
                await asyncio.sleep(delay)
            last = i == len(deltas) - 1
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish if last else None,
            }
            yield {**base, "choices": [choice]}
        result.usage = usage
        result.finish_reason = finish

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Deterministic vectors: a function of each input (its SHA-256 stretched to the
        length asked for, option `dimensions` else 8), unit length. Tokens: ceil(chars / 4)
        of a string, the length of a token array."""
        await self._start()
        size = request.dimensions or int(self._option("dimensions", 8))
        vectors, used = [], 0
        for item in request.inputs:
            seed = orjson.dumps(item)
            used += estimate_text(item) if isinstance(item, str) else len(item)
            raw = b"".join(
                hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1)
            )
            vector = [b / 127.5 - 1.0 for b in raw[:size]]
            norm = sum(x * x for x in vector) ** 0.5 or 1.0
            vectors.append([round(x / norm, 6) for x in vector])
        model = request.upstream_model or str(request.body.get("model"))
        return Embeddings(vectors=vectors, usage=Usage(input_tokens=max(1, used)), model=model)
