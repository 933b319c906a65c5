"""POST /v1/chat/completions as an Operation: OpenAI's chat completions, JSON or SSE.

The seam for other inbound formats (an Anthropic Messages or a Responses request translated
to chat): build the chat request dict, then

    answer = await services.run(CHAT, headers=headers, body=chat_request_dict)

and translate `answer.body` (a chat.completion) or `answer.events`; or subclass
`ChatOperation` and override `client_body` / `client_chunk` (the answer and each stream
chunk as the client sees them) and `error_answer` (the error envelope).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from gateway import cache, streaming, tokens
from gateway.cache import CachedAnswer
from gateway.errors import InvalidRequest
from gateway.money import Cost, cost_of
from gateway.operations.base import Answer, Operation
from gateway.providers import legacy
from gateway.providers.base import (
    ChatRequest,
    Completion,
    ProviderAdapter,
    Usage,
    bad_usage,
    usage_problem,
)
from gateway.services import Call, attempt_models, finish, usage_ceiling
from gateway.snapshot import ModelSnap
from gateway.validation import upstream_body, validate_chat


class ChatOperation(Operation):
    endpoint = "chat.completions"
    mode = "chat"
    path = "/v1/chat/completions"

    # -- the request -----------------------------------------------------------------
    def parse(self, call: Call, data: Any) -> dict[str, Any]:
        body = validate_chat(data)  # OpenAI's spec, legacy fields included
        if legacy.uses_functions(body):
            # Translated once, here: every provider sees tools; the answer goes back in the
            # legacy shape (`client_body`, `client_chunk`).
            try:
                body = legacy.request_to_tools(body)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param="functions") from None
            call.legacy_functions = True
        call.stream = bool(body.get("stream"))
        return body

    def estimate(self, call: Call) -> int:
        return tokens.estimate_prompt(call.body)

    def input_upper_bound(self, call: Call) -> int:
        return tokens.prompt_upper_bound(call.body)

    def max_tokens(self, call: Call) -> int | None:
        return call.body.get("max_completion_tokens") or call.body.get("max_tokens")

    def output_limits(self, call: Call, max_tokens: int | None) -> tuple[int, int | None]:
        """(output tokens the reservation holds, the output cap sent upstream or None).

        A request's own max_tokens decides both. Without one, a strict budget covering it
        holds the chain's largest max output and nothing is sent (the model may use all of
        it); else the cap applies: the key's, else the feature's (the admin's or the learned
        one), else GATEWAY["OUTPUT_CAP_DEFAULT"], never above the chain's largest max output.
        With `n` choices the hold is n times that: every choice may use all of it.
        """
        choices = call.body.get("n") or 1
        chain_max = max(m.max_output_tokens for m in call.chain)
        if max_tokens:
            return max_tokens * choices, None
        if any(b.reservation == "strict" for b in call.budgets):
            return chain_max * choices, None
        cap = (
            (call.key.output_cap if call.key else None)
            or (call.feature.output_cap if call.feature else None)
            or settings.GATEWAY["OUTPUT_CAP_DEFAULT"]
        )
        cap = min(int(cap), chain_max)
        return cap * choices, cap

    def cache_key(self, call: Call, chain: list[ModelSnap]) -> str | None:
        if not cache.may_cache(call.body, call.feature):
            return None
        # A capped answer differs from an uncapped one: the cap is part of the key.
        keyed = {**call.body, "max_tokens": call.output_cap} if call.output_cap else call.body
        assert call.team is not None  # authenticated first
        return cache.key_for(team=call.team, body=keyed, chain=tuple(m.name for m in chain))

    def cacheable(self, call: Call, body: dict[str, Any]) -> bool:
        return cache.cacheable(body, call.body)

    # -- serving ---------------------------------------------------------------------
    def provider_request(
        self, call: Call, model: ModelSnap, adapter: ProviderAdapter, cap: int | None
    ) -> tuple[ChatRequest | None, tuple[str, str] | None]:
        body = upstream_body(call.body)
        sent = {k: v for k, v in body.items() if k not in model.drop_params}
        refusal = refusal_of(model, adapter.refusals(sent))
        if refusal is not None:
            return None, refusal
        request = ChatRequest(
            body=sent,
            upstream_model=model.upstream_id,
            output_cap=cap,
            usage_ceiling=usage_ceiling(model),
        )
        return request, None

    async def serve(self, call: Call) -> Answer:
        if call.stream:
            chunks, first, result = await attempt_models(call, streaming.start_stream)
            events = streaming.live_events(call, chunks, first, result)
            return Answer(events=events, headers=call.headers(None))
        completion: Completion = await attempt_models(call, _complete_checked)
        usage = _usage_or_estimate(call, completion.usage, completion.body)
        assert call.served is not None  # attempt_models returned: a model answered
        cost = cost_of(usage, call.served.prices)
        await finish(call, usage=usage, cost=cost, body=completion.body)
        body = self.client_body(call, completion.body)
        return Answer(body=body, headers=call.headers(cost), native=completion.native)

    async def cached(self, call: Call, hit: CachedAnswer, cost: Cost) -> Answer:
        if call.stream:
            return Answer(events=streaming.cached_events(call, hit), headers=call.headers(cost))
        return Answer(body=self.client_body(call, hit.body), headers=call.headers(cost))

    # -- how the client sees it --------------------------------------------------------
    def client_body(self, call: Call, body: dict[str, Any]) -> dict[str, Any]:
        """An answer as the client asked for it: the legacy `function_call` shape if it
        asked with `functions` (the cache and the ledger keep the tools shape)."""
        return legacy.response_to_legacy(body) if call.legacy_functions else body

    def client_chunk(self, call: Call, chunk: dict[str, Any]) -> dict[str, Any]:
        """A stream chunk as the client asked for it (see `client_body`)."""
        return legacy.chunk_to_legacy(chunk) if call.legacy_functions else chunk


CHAT = ChatOperation()


async def _complete_checked(adapter, request: ChatRequest) -> Completion:
    """A whole answer whose usage can be billed: absurd counts are a retryable bad_response,
    so the next model is tried and nothing is billed at the provider's figure."""
    completion = await adapter.complete(request)
    problem = usage_problem(completion.usage, request.usage_ceiling)
    if problem is not None:
        raise bad_usage(adapter.config.name, problem)
    return completion


def _usage_or_estimate(call: Call, usage: Usage | None, body: dict[str, Any] | None) -> Usage:
    ceiling = usage_ceiling(call.served) if call.served else 0
    if usage is not None and usage.reported and usage_problem(usage, ceiling) is None:
        return usage
    text = ""
    for choice in (body or {}).get("choices", []):
        message = choice.get("message") or {}
        text += str(message.get("content") or "") + str(message.get("tool_calls") or "")
    return Usage(
        input_tokens=call.prompt_tokens,
        output_tokens=tokens.estimate_text(text),
        reported=False,
    )


def refusal_of(model: ModelSnap, refusals: dict[str, str]) -> tuple[str, str] | None:
    """(parameter, message) of the first thing `model` cannot honour, or None.

    The message names the parameter and the model, e.g. "`logprobs` is not supported by model
    claude-haiku (anthropic)"."""
    for param, phrase in refusals.items():
        phrase = phrase or " is not supported"
        kind = model.provider.kind
        return param, f"`{param}`{phrase} by model {model.name} ({kind})."
    return None
