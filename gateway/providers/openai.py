"""OpenAI's Chat Completions API: the gateway's own wire format, so the adapter mostly forwards.

Streams always ask upstream for `stream_options.include_usage`, so the cost of a streamed
answer is the provider's own count; the usage-only chunk is recorded, not yielded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from gateway.providers.base import (
    DONE,
    ChatRequest,
    Completion,
    ProviderAdapter,
    ProviderError,
    StreamResult,
    Usage,
    stream_cut,
)

_PARSE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def usage_from_openai(raw: Any) -> Usage | None:
    """OpenAI's `usage` object (None when absent), with cached prompt tokens."""
    if not raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"
    default_base_url = "https://api.openai.com/v1"
    # OpenAI's current name (its reasoning models reject `max_tokens`).
    max_tokens_param = "max_completion_tokens"

    def headers(self) -> dict[str, str]:
        if not self.config.api_key:
            # Our configuration's fault, not the caller's: another provider may serve it.
            raise ProviderError(
                f"{self.config.name}: no API key configured", retryable=True, kind="auth_error"
            )
        return {"authorization": f"Bearer {self.config.api_key}"}

    def payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = {**request.body, "model": request.upstream_model or request.body.get("model")}
        if request.output_cap and not (body.get("max_completion_tokens") or body.get("max_tokens")):
            body[self.max_tokens_param] = request.output_cap
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    async def complete(self, request: ChatRequest) -> Completion:
        url = self.url("/chat/completions")
        data = await self.post_json(url, self.payload(request, stream=False), self.headers())
        try:
            if not isinstance(data.get("choices"), list):
                raise ValueError("no choices in the answer")
            usage = usage_from_openai(data.get("usage"))
        except _PARSE_ERRORS as exc:
            raise self.fail(exc) from exc
        return Completion(body=data, usage=usage or Usage(reported=False))

    async def stream(
        self, request: ChatRequest, result: StreamResult
    ) -> AsyncIterator[dict[str, Any]]:
        url = self.url("/chat/completions")
        events = self.sse(url, self.payload(request, stream=True), self.headers())
        done = False
        async with aclosing(events):
            async for _event, data in events:
                if data is DONE:
                    done = True
                    break
                try:
                    chunk = self._chunk(data, result)
                except _PARSE_ERRORS as exc:
                    raise self.fail(exc) from exc
                if chunk is not None:
                    yield chunk
        if not done:
            raise stream_cut(self.config.name, "no [DONE]")
        if result.finish_reason is None:
            raise stream_cut(self.config.name, "no finish_reason")

    def _chunk(self, data: dict[str, Any], result: StreamResult) -> dict[str, Any] | None:
        """Record usage and finish reason; return the chunk to yield, if it has choices."""
        if data.get("error"):
            raise ProviderError(
                f"{self.config.name}: error in stream: {_message(data)}",
                retryable=True,
                kind="server_error",
                body=data,
            )
        usage = usage_from_openai(data.pop("usage", None))
        if usage is not None:
            result.usage = usage
        choices = data.get("choices")
        if not choices:
            return None
        for choice in choices:
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        return data


def _message(data: dict[str, Any]) -> str:
    err = data["error"]
    return str(err.get("message") or err.get("type")) if isinstance(err, dict) else str(err)
