"""Self-hosted servers speaking OpenAI's wire format: vLLM, Ollama, llama.cpp, LM Studio...

Differences from OpenAI: the base URL must be configured, the API key is optional, and the
server may report no usage (then `Completion.usage.reported` is False and a stream's
`result.usage` stays None: the gateway estimates). Option `"stream_usage": false` stops
sending `stream_options` to old servers that reject unknown fields. Option
`"unsupported_params": ["response_format", ...]` names what the server cannot honour.
"""

from __future__ import annotations

from typing import Any

from gateway.providers.base import ChatRequest, asked
from gateway.providers.openai import OpenAIAdapter


class OpenAICompatibleAdapter(OpenAIAdapter):
    kind = "openai_compatible"
    label = "OpenAI-compatible (vLLM, Ollama, llama.cpp…)"
    default_base_url = ""
    # vLLM, Ollama, llama.cpp and LM Studio all read `max_tokens`; not all know the newer name.
    max_tokens_param = "max_tokens"

    def refusals(self, body: dict[str, Any]) -> dict[str, str]:
        """Option `unsupported_params`: what this server cannot honour (e.g. an old server
        without `response_format`), refused or skipped by fallback instead of ignored."""
        names = self.config.options.get("unsupported_params") or ()
        own = {str(name): "" for name in names if asked(body, str(name))}
        return {**super().refusals(body), **own}

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = super().payload(request, stream=stream)
        if stream and not self.config.options.get("stream_usage", True):
            body.pop("stream_options", None)
        return body
