"""The loopback Anthropic server's wire format: /v1/messages, JSON and named SSE events."""

from __future__ import annotations

from typing import Any

from tests.loopback_wire import Behaviour, Wire, args_pieces, new_id, pieces, sse

# What the loopback Claude thinks when asked to, and the signature it gives that thought.
THOUGHT = "The user wants a greeting; a short one will do."
SIGNATURE = "EqQBCkYIARgCIkD-loopback-signature"


class AnthropicWire(Wire):
    path = "/v1/messages"
    error_types = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    _stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

    def check(
        self, headers: dict[str, str], body: Any, api_key: str | None
    ) -> tuple[int, str] | None:
        if api_key is not None and headers.get("x-api-key") != api_key:
            return 401, "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        if not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
            return 400, "max_tokens: Field required"
        if any(m.get("role") not in ("user", "assistant") for m in body.get("messages") or []):
            return 400, "messages: Unexpected role. Allowed roles are 'user' or 'assistant'"
        return None

    def error_body(self, status: int, b: Behaviour, message: str | None = None) -> dict[str, Any]:
        kind = self.error_type(status, b)
        text = (
            message
            or b.message
            or ("Overloaded" if kind == "overloaded_error" else "Internal server error")
        )
        return {
            "type": "error",
            "error": {"type": kind, "message": text},
            "request_id": new_id("req_loop"),
        }

    def stream_error_frame(self, b: Behaviour) -> bytes:
        return sse(self.error_body(529, b), "error")

    def _usage(self, body: dict[str, Any], b: Behaviour, output: int) -> dict[str, Any]:
        prompt, _ = self.counts(body, b)
        return {
            "input_tokens": prompt,
            "cache_creation_input_tokens": b.cache_write_tokens,
            "cache_read_input_tokens": b.cached_tokens,
            "output_tokens": output,
            "service_tier": "standard",
        }

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": new_id("msg_loop"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }

    @staticmethod
    def _answer(body: dict[str, Any], b: Behaviour) -> tuple[str, tuple[str, Any] | None]:
        """(text, tool call) of the answer. Like Claude, a forced tool (`tool_choice` of type
        "tool") is called with no prose before it, under the forced name."""
        choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
        if choice.get("type") == "tool" and b.tool_call:
            return "", (choice["name"], b.tool_call[1])
        return b.text, b.tool_call

    @staticmethod
    def _thinks(body: dict[str, Any]) -> bool:
        """Extended thinking asked for: the answer starts with a signed thinking block."""
        thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
        return thinking.get("type") in ("enabled", "adaptive")

    @staticmethod
    def _citation(body: dict[str, Any]) -> dict[str, Any] | None:
        """Like Claude, an answer about a plain-text document with citations enabled cites
        it (the first 20 characters, as a char_location)."""
        for message in body.get("messages") or []:
            content = message.get("content")
            for i, block in enumerate(content if isinstance(content, list) else ()):
                source = block.get("source") or {}
                if block.get("type") == "document" and (block.get("citations") or {}).get(
                    "enabled"
                ):
                    cited = str(source.get("data") or "")[:20]
                    return {
                        "type": "char_location",
                        "cited_text": cited,
                        "document_index": i,
                        "document_title": block.get("title"),
                        "start_char_index": 0,
                        "end_char_index": len(cited),
                    }
        return None

    def completion(self, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        text, tool_call = self._answer(body, b)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        citation = self._citation(body)
        if content and citation:
            content[0]["citations"] = [citation]
        if self._thinks(body):
            content.insert(0, {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE})
        if tool_call:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_loop1",
                    "name": tool_call[0],
                    "input": tool_call[1],
                }
            )
        stop = self._stop["tool_calls" if tool_call else b.finish]
        return {
            **self._message(body),
            "content": content,
            "stop_reason": stop,
            "usage": self._usage(body, b, self.counts(body, b)[1]),
        }

    def frames(self, body: dict[str, Any], b: Behaviour) -> list[bytes]:
        text, tool_call = self._answer(body, b)
        start = {**self._message(body), "usage": self._usage(body, b, 1)}
        out = [sse({"type": "message_start", "message": start}, "message_start")]
        index = 0
        if self._thinks(body):
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out.append(
                sse(
                    {"type": "content_block_start", "index": 0, "content_block": block},
                    "content_block_start",
                )
            )
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(THOUGHT)]
            deltas.append({"type": "signature_delta", "signature": SIGNATURE})
            out += [
                sse(
                    {"type": "content_block_delta", "index": 0, "delta": d},
                    "content_block_delta",
                )
                for d in deltas
            ]
            out.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
            index = 1
        if text:
            out.append(
                sse(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            out.append(sse({"type": "ping"}, "ping"))
            out += [
                sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": p},
                    },
                    "content_block_delta",
                )
                for p in pieces(text)
            ]
            citation = self._citation(body)
            if citation:
                delta = {"type": "citations_delta", "citation": citation}
                out.append(
                    sse(
                        {"type": "content_block_delta", "index": index, "delta": delta},
                        "content_block_delta",
                    )
                )
            out.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
            index += 1
        if tool_call:
            block = {"type": "tool_use", "id": "toolu_loop1", "name": tool_call[0], "input": {}}
            out.append(
                sse(
                    {"type": "content_block_start", "index": index, "content_block": block},
                    "content_block_start",
                )
            )
            out += [
                sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p},
                    },
                    "content_block_delta",
                )
                for p in args_pieces(tool_call[1])
            ]
            out.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        stop = self._stop["tool_calls" if tool_call else b.finish]
        out.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": self.counts(body, b)[1]},
                },
                "message_delta",
            )
        )
        return out + [sse({"type": "message_stop"}, "message_stop")]
