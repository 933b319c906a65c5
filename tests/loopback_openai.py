"""The loopback OpenAI server's wire format: /v1/chat/completions, JSON and SSE,
/v1/embeddings (floats or base64, `dimensions`) and /v1/responses (tests/loopback_responses.py)."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from typing import Any

import orjson

from tests import loopback_responses
from tests.loopback_wire import Behaviour, Wire, args_pieces, new_id, pieces, sse


class OpenAIWire(Wire):
    path = "/v1/chat/completions"
    base_path = "/v1"
    error_types = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "requests",
        500: "server_error",
        503: "server_error",
    }
    _codes = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
    other_paths = {"/v1/embeddings": "embeddings", "/v1/responses": "responses"}
    responses = staticmethod(loopback_responses.response)
    responses_frames = staticmethod(loopback_responses.frames)
    responses_error_frame = staticmethod(loopback_responses.error_frame)

    def check_other(
        self, path: str, headers: dict[str, str], body: Any, api_key: str | None
    ) -> tuple[int, str] | None:
        if api_key is not None and headers.get("authorization") != f"Bearer {api_key}":
            return 401, "Incorrect API key provided."
        if not isinstance(body, dict) or "input" not in body or "model" not in body:
            return 400, "Missing required parameter: 'input'."
        return None

    def embeddings(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        """OpenAI's embeddings answer: one vector per input (a function of the input), usage
        as prompt tokens: ceil(characters / 4) of a string, the length of a token array."""
        value = body["input"]
        inputs = [value] if isinstance(value, str) or isinstance(value[0], int) else value
        size = body.get("dimensions") or b.dimensions
        data, prompt = [], 0
        for index, item in enumerate(inputs):
            prompt += math.ceil(len(item) / 4) if isinstance(item, str) else len(item)
            seed = hashlib.sha256(orjson.dumps(item)).digest()
            vector = [round((seed[i % 32] + i) % 251 / 125.5 - 1, 6) for i in range(size)]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        if b.prompt_tokens is not None:
            prompt = b.prompt_tokens
        out: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if b.usage:
            out["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        return out

    def check(
        self, headers: dict[str, str], body: Any, api_key: str | None
    ) -> tuple[int, str] | None:
        if api_key is not None and headers.get("authorization") != f"Bearer {api_key}":
            return 401, "Incorrect API key provided."
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return 400, "Missing required parameter: 'messages'."
        return None

    def error_body(self, status: int, b: Behaviour, message: str | None = None) -> dict[str, Any]:
        default = "The server had an error while processing your request. Sorry about that!"
        return {
            "error": {
                "message": message or b.message or default,
                "type": self.error_type(status, b),
                "param": None,
                "code": self._codes.get(status),
            }
        }

    def stream_error_frame(self, b: Behaviour) -> bytes:
        return sse(self.error_body(500, b))

    def _usage(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        prompt, completion = self.counts(body, b)
        completion *= body.get("n") or 1  # every choice is the same answer
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": b.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": b.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _base(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        return {
            "id": new_id("chatcmpl-loop"),
            "object": obj,
            "created": int(time.time()),
            "model": body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_loopback",
        }

    @staticmethod
    def _logprobs(body: dict[str, Any], b: Behaviour, part: str, texts: list[str]) -> Any:
        """The `logprobs` of a choice for these pieces, when the request asked for them."""
        if not (body.get("logprobs") and b.logprobs):
            return None
        top = int(body.get("top_logprobs") or 0)
        tokens = [
            {
                "token": t,
                "logprob": -0.25,
                "bytes": list(t.encode()),
                "top_logprobs": [{"token": t, "logprob": -0.25, "bytes": list(t.encode())}][:top],
            }
            for t in texts
        ]
        other = "refusal" if part == "content" else "content"
        return {part: tokens, other: None}

    def completion(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if b.refusal else b.text or None,
            "refusal": b.refusal,
            "annotations": [],
        }
        part, said = ("refusal", b.refusal) if b.refusal else ("content", b.text)
        finish = b.finish
        if b.tool_call:
            name, args = b.tool_call
            message["tool_calls"] = [
                {
                    "id": "call_loop1",
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            ]
            finish = "tool_calls"
        if b.custom_call:
            name, text = b.custom_call
            custom = {"name": name, "input": text}
            message["tool_calls"] = [{"id": "call_loop1", "type": "custom", "custom": custom}]
            finish = "tool_calls"
        out = {
            **self._base(body, "chat.completion"),
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "logprobs": self._logprobs(body, b, part, pieces(said or "")),
                    "finish_reason": finish,
                }
                for i in range(body.get("n") or 1)
            ],
        }
        if b.usage:
            out["usage"] = self._usage(body, b)
        return out

    def frames(self, body: dict[str, Any], b: Behaviour) -> list[bytes]:
        base = self._base(body, "chat.completion.chunk")
        with_usage = bool((body.get("stream_options") or {}).get("include_usage")) and b.usage
        if with_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> bytes:
            # One chunk per choice (n > 1), as OpenAI interleaves them.
            return b"".join(
                sse(
                    {
                        **base,
                        "choices": [
                            {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}
                        ],
                    }
                )
                for i in range(body.get("n") or 1)
            )

        part, said = ("refusal", b.refusal) if b.refusal else ("content", b.text)
        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        out += [chunk({part: p}, lp=self._logprobs(body, b, part, [p])) for p in pieces(said)]
        finish = b.finish
        if b.tool_call:
            name, args = b.tool_call
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_loop1",
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            out += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                for p in args_pieces(args)
            ]
            finish = "tool_calls"
        if b.custom_call:
            name, text = b.custom_call
            call = {"index": 0, "id": "call_loop1", "type": "custom"}
            out.append(chunk({"tool_calls": [{**call, "custom": {"name": name, "input": ""}}]}))
            out += [
                chunk({"tool_calls": [{"index": 0, "custom": {"input": p}}]}) for p in pieces(text)
            ]
            finish = "tool_calls"
        out.append(chunk({}, finish))
        if with_usage:
            out.append(sse({**base, "choices": [], "usage": self._usage(body, b)}))
        return out + [b"data: [DONE]\n\n"]
