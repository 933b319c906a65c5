"""The request pipeline of /v1/chat/completions.

prepare (auth, validation, feature, routing) → rate limits → cache → budget reservation →
the fallback loop → settle, cache, ledger. Non-streamed answers are finished here; streamed
ones are handed to gateway.streaming once a provider has produced its first chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from redis.exceptions import RedisError

from budgets import ratelimit
from budgets import services as budgets
from gateway import cache, circuit, inflight, ledger, metrics, runtime, tokens
from gateway.auth import authenticate, resolve_feature
from gateway.config import BudgetSnap, FeatureSnap, KeySnap, ModelSnap, TeamSnap
from gateway.errors import (
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    NoProviderAvailable,
    ProviderRejected,
    ServiceUnavailable,
)
from gateway.logs import request_id_var
from gateway.money import Cost, cost_of, format_usd, worst_case_units
from gateway.providers import adapter_for, legacy
from gateway.providers.base import (
    ChatRequest,
    Completion,
    ProviderError,
    Usage,
    bad_usage,
    error_from_exception,
    usage_problem,
)
from gateway.redaction import redact, scrub_provider_text
from gateway.roundtrip import RoundTrip
from gateway.routing import resolve_chain
from gateway.serializers import parse_json, upstream_body, validate_chat

log = logging.getLogger(__name__)
PRIORITIES = ("low", "medium", "high")


@dataclass
class Call:
    """Everything known about one request as it moves through the pipeline."""

    request_id: str
    started: float
    created_at: datetime
    deadline: float = 0.0
    key: KeySnap | None = None
    team: TeamSnap | None = None
    feature: FeatureSnap | None = None
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    chain: list[ModelSnap] = field(default_factory=list)
    cache_key: str | None = None
    cache_ttl: int = 0
    cache_status: str = "bypass"
    reservation: Any = None
    # One entry per model tried: "error" is the generic reason a client may read ("" when it
    # answered), "detail" the provider's own account, scrubbed, for the ledger only.
    attempts: list[dict[str, str]] = field(default_factory=list)
    served: ModelSnap | None = None
    budgets: list[BudgetSnap] = field(default_factory=list)  # every budget covering the request
    prompt_tokens: int = 0  # the typical estimate (routing, rate limits, missing usage)
    max_output: int = 0  # what the reservation holds: max_tokens, else the cap, else the max; × n
    output_cap: int | None = None  # set when the request sent no max_tokens and is capped
    sent_cap: int | None = None  # the cap sent to the model that served (≤ its max output)
    circuit_states: dict[str, list] = field(default_factory=dict)  # read ahead by `admit`
    legacy_functions: bool = False  # asked with `functions`: answered with `function_call`

    @property
    def requested_model(self) -> str:
        return str(self.body.get("model", ""))

    def headers(self, cost: Cost | None) -> dict[str, str]:
        if cost is None:
            cost_text = "pending" if self.served else "0"
        else:
            cost_text = "unpriced" if cost.unpriced else format_usd(cost.usd)
        return {
            "X-Request-ID": self.request_id,
            "X-Gateway-Model": self.served.name if self.served else "",
            "X-Gateway-Provider": self.served.provider.name if self.served else "",
            "X-Gateway-Cache": self.cache_status,
            "X-Gateway-Cost-USD": cost_text,
            "X-Gateway-Attempts": str(len(self.attempts)),
            **({"X-Gateway-Output-Cap": str(self.sent_cap)} if self.sent_cap else {}),
        }


class Headers(Protocol):
    """Request headers by case-insensitive name (views.RequestHeaders, or a dict in tests)."""

    def get(self, name: str, default: str | None = None, /) -> str | None: ...


def new_call() -> Call:
    call = Call(
        request_id="req_" + uuid.uuid4().hex, started=time.monotonic(), created_at=datetime.now(UTC)
    )
    # Every log line written while serving the request names it (gateway/logs.py); the
    # streaming generators set it again, as they run in the task that sends the response.
    request_id_var.set(call.request_id)
    return call


async def prepare(call: Call, *, headers: Headers, raw_body: bytes) -> None:
    """Authenticate, validate and route; raises GatewayError for anything wrong."""
    call.key, call.team, snapshot = await authenticate(
        headers.get("authorization"), getattr(headers, "meta", None)
    )
    call.feature = resolve_feature(call.key, call.team, headers.get("x-gateway-feature"))
    data = validate_chat(parse_json(raw_body))  # OpenAI's spec, legacy fields included
    if legacy.uses_functions(data):
        # Translated once, here: every provider sees tools; the answer goes back in the
        # legacy shape (`client_body`, `client_chunk`).
        try:
            data = legacy.request_to_tools(data)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="functions") from None
        call.legacy_functions = True
    call.body = data
    call.stream = bool(call.body.get("stream"))
    priority = (headers.get("x-gateway-priority") or "medium").strip().lower()
    if priority not in PRIORITIES:
        raise InvalidRequest(
            "X-Gateway-Priority must be low, medium or high.", param="X-Gateway-Priority"
        )
    try:
        call.cache_ttl = cache.ttl_for(
            header=headers.get("x-gateway-cache-ttl"),
            feature=call.feature,
            default=settings.GATEWAY["DEFAULT_CACHE_TTL_S"],
        )
    except ValueError:
        raise InvalidRequest(
            "X-Gateway-Cache-TTL must be a whole number of seconds (0 = bypass).",
            param="X-Gateway-Cache-TTL",
        ) from None
    call.prompt_tokens = tokens.estimate_prompt(call.body)
    max_tokens = call.body.get("max_completion_tokens") or call.body.get("max_tokens")
    chain = resolve_chain(
        snapshot,
        model=call.requested_model,
        priority=priority,
        prompt_tokens=call.prompt_tokens,
        max_tokens=max_tokens,
        max_tokens_param="max_completion_tokens" if "max_completion_tokens" in call.body else None,
    )
    call.budgets = call.team.budgets_for(call.feature)
    call.chain = _priced_under_hard_budget(call, chain)
    call.max_output, call.output_cap = output_limits(call, max_tokens)
    call.max_output *= call.body.get("n") or 1  # every choice may use all of it
    call.deadline = call.started + settings.GATEWAY["REQUEST_DEADLINE_S"]
    if call.cache_ttl > 0 and cache.may_cache(call.body, call.feature):
        # A capped answer differs from an uncapped one: the cap is part of the key.
        keyed = {**call.body, "max_tokens": call.output_cap} if call.output_cap else call.body
        call.cache_key = cache.key_for(
            team=call.team, body=keyed, chain=tuple(m.name for m in chain)
        )


def output_limits(call: Call, max_tokens: int | None) -> tuple[int, int | None]:
    """(output tokens the reservation holds, the output cap sent upstream or None).

    A request's own max_tokens decides both. Without one, a strict budget covering it holds
    the chain's largest max output and nothing is sent (the model may use all of it); else
    the cap applies: the key's, else the feature's (the admin's or the learned one), else
    GATEWAY["OUTPUT_CAP_DEFAULT"], never above the chain's largest max output.
    """
    chain_max = max(m.max_output_tokens for m in call.chain)
    if max_tokens:
        return max_tokens, None
    if any(b.reservation == "strict" for b in call.budgets):
        return chain_max, None
    cap = (
        (call.key.output_cap if call.key else None)
        or (call.feature.output_cap if call.feature else None)
        or settings.GATEWAY["OUTPUT_CAP_DEFAULT"]
    )
    cap = min(int(cap), chain_max)
    return cap, cap


def _priced_under_hard_budget(call: Call, chain: list[ModelSnap]) -> list[ModelSnap]:
    """Under a hard budget an unpriced model could spend without limit: it is skipped."""
    if not any(b.hard for b in call.budgets):
        return chain
    priced = [m for m in chain if m.prices.known]
    if not priced:
        raise InvalidRequest(
            f"No model in the chain for '{call.requested_model}' has a price, and a hard budget "
            "covers this request: set the model's prices in the admin.",
            param="model",
            code="model_unpriced",
        )
    return priced


async def admit(call: Call) -> cache.CachedAnswer | None:
    """Rate limits, then the cache, then the budget reservation. Returns a cached answer, if any.

    One Redis round trip: the admission script (budgets.services.Admission) and the first
    provider's circuit state.
    """
    redis = runtime.aredis()
    try:
        trip = RoundTrip(redis)
        units = worst_case_units(
            input_tokens=tokens.prompt_upper_bound(call.body),
            output_tokens=call.max_output,
            prices=[m.prices for m in call.chain],
        )
        admission = budgets.queue_admission(
            trip,
            rate=ratelimit.rate_check(
                key=call.key, team=call.team, tokens=call.prompt_tokens + call.max_output
            ),
            cache_key=call.cache_key,
            team=call.team,
            budgets=call.budgets,
            request_id=call.request_id,
            units=units,
        )
        # In flight until its record is written (a refusal or a cache hit writes one at
        # once); a process that dies first leaves it for the lost-request sweep.
        inflight.queue_register(trip, call, units)
        first = call.chain[0].provider.name
        circuit_reply = circuit.queue_read(trip, first)
        replies = await trip.send()
        call.circuit_states[first] = replies[circuit_reply]
        reply = replies[admission.index]
        if call.cache_key and admission.cache_checked(reply):
            call.cache_status = "miss"
        hit = admission.outcome(reply)
        if hit is not None:
            call.cache_status = "hit"
            return cache.CachedAnswer.loads(hit)
        call.reservation = admission.reservation
    except (RedisError, OSError) as exc:
        call.cache_key, call.cache_status = None, "bypass"
        if call.budgets and not call.team.budget_fail_open:
            raise ServiceUnavailable(
                "Budget counters are unreachable, so spending cannot be checked; try again "
                "shortly.",
                code="budget_store_unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        log.warning(
            "redis unreachable; serving %s without cache or limits (fail open)", call.request_id
        )
    return None


async def attempt_models(call: Call, start):
    """The fallback loop: `start(adapter, request)` for each model until one succeeds.

    Retryable failures move on to the next model; the caller's own errors end the loop.
    Returns what `start` returned, with `call.served` set.
    """
    redis = runtime.aredis()
    body = upstream_body(call.body)
    refused: list[tuple[str, str]] = []  # (parameter, message) of each model that cannot serve
    for index, model in enumerate(call.chain):
        provider = model.provider.name
        adapter = adapter_for(model.provider, runtime.http_client())
        sent = {k: v for k, v in body.items() if k not in model.drop_params}
        refusal = refusal_of(model, adapter.refusals(sent))
        if refusal is not None:  # skipped, and said so; a 400 when no model can serve
            refused.append(refusal)
            call.attempts.append(_attempt(model, f"cannot serve: {refusal[1]}", ""))
            continue
        try:
            state, dirty = await circuit.check(
                redis, provider, call.circuit_states.pop(provider, None)
            )
        except (RedisError, OSError):
            state, dirty = circuit.State.CLOSED, False
        if state is circuit.State.OPEN and (index < len(call.chain) - 1 or call.attempts):
            call.attempts.append(_attempt(model, "circuit open", ""))
            continue
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(_attempts_message("The request deadline passed", call))
        cap = min(call.output_cap, model.max_output_tokens) if call.output_cap else None
        request = ChatRequest(
            body=sent,
            upstream_model=model.upstream_id,
            output_cap=cap,
            usage_ceiling=usage_ceiling(model),
        )
        try:
            async with asyncio.timeout(remaining):
                try:
                    result = await start(adapter, request)
                except (ProviderError, TimeoutError):
                    raise
                except Exception as exc:  # an adapter's bug or a shape nobody foresaw
                    log.warning(
                        "%s: unexpected failure of an upstream call", provider, exc_info=True
                    )
                    raise _as_bad_response(provider, exc) from exc
        except TimeoutError:
            call.attempts.append(_attempt(model, "deadline", ""))
            raise DeadlineExceeded(_attempts_message("The request deadline passed", call)) from None
        except ProviderError as exc:
            call.attempts.append(_attempt(model, exc.public, exc.message))
            if not exc.retryable:
                raise ProviderRejected(exc.public, status=exc.status or 400, body=exc.body) from exc
            await _safe(circuit.record_failure(redis, provider))
            continue
        call.attempts.append(_attempt(model, "", ""))
        call.served = model
        call.sent_cap = cap
        await _safe(circuit.record_success(redis, provider, state, dirty))
        return result
    if len(refused) == len(call.chain):
        param, message = refused[0]
        raise InvalidRequest(message, param=param, code="unsupported_parameter")
    raise NoProviderAvailable(_attempts_message("Every provider failed", call))


def refusal_of(model: ModelSnap, refusals: dict[str, str]) -> tuple[str, str] | None:
    """(parameter, message) of the first thing `model` cannot honour, or None.

    The message names the parameter and the model, e.g. "`logprobs` is not supported by model
    claude-haiku (anthropic)"."""
    for param, phrase in refusals.items():
        phrase = phrase or " is not supported"
        kind = model.provider.kind
        return param, f"`{param}`{phrase} by model {model.name} ({kind})."
    return None


def usage_ceiling(model: ModelSnap) -> int:
    """The most prompt + output tokens a call to `model` can report (0: unknown)."""
    return max(model.context_window or 0, 0) + max(model.max_output_tokens or 0, 0)


def _as_bad_response(provider: str, exc: Exception) -> ProviderError:
    mapped = error_from_exception(provider, exc)
    if mapped.kind == "provider_error":
        mapped.kind = "bad_response"
    return mapped


def _attempt(model: ModelSnap, error: str, detail: str) -> dict[str, str]:
    entry = {"model": model.name, "provider": model.provider.name, "error": error}
    if detail and detail != error:
        entry["detail"] = scrub_provider_text(detail)[:500]
    return entry


def _attempts_message(prefix: str, call: Call) -> str:
    tried = "; ".join(
        f"{a['model']} ({a['provider']}): {a['error'] or 'ok'}" for a in call.attempts
    )
    return f"{prefix}. Attempts: {tried or 'none'}."


async def _safe(coro) -> None:
    try:
        await coro
    except (RedisError, OSError):
        log.warning("redis unreachable while updating a circuit breaker")


async def complete(call: Call) -> tuple[dict[str, Any], dict[str, str]]:
    """A non-streamed call: the OpenAI body and the gateway's headers."""
    completion: Completion = await attempt_models(call, _complete_checked)
    usage = _usage_or_estimate(call, completion.usage, completion.body)
    cost = cost_of(usage, call.served.prices)
    await finish(call, usage=usage, cost=cost, body=completion.body)
    return client_body(call, completion.body), call.headers(cost)


def client_body(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """An answer as the client asked for it: the legacy `function_call` shape if it asked
    with `functions` (the cache and the ledger keep the tools shape)."""
    return legacy.response_to_legacy(body) if call.legacy_functions else body


def client_chunk(call: Call, chunk: dict[str, Any]) -> dict[str, Any]:
    """A stream chunk as the client asked for it (see `client_body`)."""
    return legacy.chunk_to_legacy(chunk) if call.legacy_functions else chunk


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


async def finish(
    call: Call,
    *,
    usage: Usage,
    cost: Cost,
    body: dict[str, Any] | None,
    status: str = "ok",
    error_type: str = "",
) -> None:
    """Settle the budget, cache a whole answer and push the ledger record: one Redis round
    trip. The record is in Redis (or the spool) when this returns."""
    redis = runtime.aredis()
    trip = RoundTrip(redis)
    inflight.queue_done(trip, call.request_id)  # first: a sweep after it finds nothing
    if call.reservation is not None:
        slots, request_id = call.reservation.slots, call.request_id
    else:  # nothing was reserved (Redis was away then, failing open): spend without a hold
        slots, request_id = (budgets.slots_for(call.budgets) if cost.units else ()), ""
    spend = budgets.queue_spend(trip, slots=slots, request_id=request_id, units=cost.units)
    if status == "ok" and call.cache_key and body is not None and cache.cacheable(body, call.body):
        answer = cache.CachedAnswer(
            body=body, usage=usage, model=call.served.name, provider=call.served.provider.name
        )
        cache.queue_put(trip, call.cache_key, answer, call.cache_ttl)
    entry = ledger_entry(
        call, usage=usage, cost=cost, status=status, error_type=error_type, response=body
    )
    ledger.queue_push(trip, entry)
    try:
        replies = await trip.send()
        if spend is not None:
            await budgets.after_spend(redis=redis, slots=slots, claimed=replies[spend])
    except (RedisError, OSError):
        log.warning("could not settle %s; the ledger keeps the cost", call.request_id)


async def serve_cached(call: Call, hit: cache.CachedAnswer) -> Cost:
    """A cache hit costs nothing and records what it saved."""
    model = next((m for m in call.chain if m.name == hit.model), None)
    saved = cost_of(hit.usage, model.prices) if model else Cost(Decimal(0), unpriced=True)
    call.served = model or call.chain[0]
    if call.output_cap:  # the answer was produced under this cap (it is part of the key)
        call.sent_cap = min(call.output_cap, call.served.max_output_tokens)
    zero = Cost(Decimal(0))
    await record(call, usage=hit.usage, cost=zero, saved=saved, http_status=200, response=hit.body)
    return zero


def internal_error(exc: BaseException) -> GatewayError:
    """What a client gets for an exception nobody mapped: OpenAI's envelope, a 500, and the
    request id to quote (the traceback is in the log, under that id)."""
    log.error("unexpected error while serving a request", exc_info=exc)
    error = GatewayError(
        "The gateway hit an internal error; quote the X-Request-ID header to its operator.",
        code="internal_error",
    )
    error.status = 500
    error.type = "api_error"
    return error


async def fail(call: Call, error: GatewayError) -> None:
    """Release the reservation and record the refused or failed request. Never raises: it
    runs on every error path, and a record that cannot be written is logged instead."""
    try:
        await _fail(call, error)
    except Exception:
        log.exception("could not record the failure of %s", call.request_id)


async def _fail(call: Call, error: GatewayError) -> None:
    if call.reservation is not None:
        try:
            await budgets.release(redis=runtime.aredis(), reservation=call.reservation)
        except (RedisError, OSError):
            log.warning("could not release %s; it expires on its own", call.request_id)
    if call.team is None:
        return  # no key, no team: nothing to bill the record to
    status = "refused" if error.status in (429, 503) else "error"
    await record(
        call,
        usage=Usage(reported=False),
        cost=Cost(Decimal(0)),
        status=status,
        error_type=error.code or error.type,
        http_status=error.status,
        refusal=_refusal_record(call, error),
    )


def _refusal_record(call: Call, error: GatewayError) -> dict[str, Any] | None:
    """A refusal's figures (the 429's message as data) so a person can follow it up from the
    usage record: a budget's window, limit, spent, reserved and needed amounts, with the
    output tokens the request would have held; or the rate limit, its scope and key."""
    refusal = getattr(error, "refusal", None)
    if not refusal:
        return None
    if refusal.get("kind") == "rate_limit":
        return dict(refusal)
    return {**refusal, "output_tokens_held": call.max_output}


async def record(call: Call, **outcome: Any) -> None:
    """Write the ledger record of a call (see `ledger_entry` for the outcome's fields)."""
    await ledger.enqueue(ledger_entry(call, **outcome), done=call.request_id)


def ledger_entry(
    call: Call,
    *,
    usage: Usage,
    cost: Cost,
    status: str = "ok",
    error_type: str = "",
    http_status: int = 200,
    saved: Cost | None = None,
    response: dict[str, Any] | None = None,
    refusal: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The call's ledger record; also counted in the metrics."""
    entry = {
        "request_id": call.request_id,
        "created_at": call.created_at.isoformat(),
        "team_id": call.team.id,
        "feature_id": call.feature.id if call.feature else None,
        "api_key_id": call.key.id if call.key else None,
        "requested_model": call.requested_model[:128],
        "served_model": call.served.name if call.served else "",
        "provider": call.served.provider.name if call.served else "",
        "attempts": len(call.attempts),
        "attempt_log": call.attempts,
        "stream": call.stream,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_usd": str(cost.usd),
        "saved_usd": str(saved.usd) if saved else "0",
        "estimated": not usage.reported and status != "refused" and http_status == 200,
        "unpriced": cost.unpriced or bool(saved and saved.unpriced),
        "latency_ms": int((time.monotonic() - call.started) * 1000),
        "status": status,
        "http_status": http_status,
        "error_type": error_type[:64],
        "cache": call.cache_status,
        "output_cap": call.sent_cap if call.served else call.output_cap,
        "refusal": refusal,
    }
    if call.team.store_content:
        entry["content"] = redact({"messages": call.body.get("messages"), "response": response})
    metrics.observe(
        entry, team_name=call.team.name, feature_name=call.feature.name if call.feature else ""
    )
    return entry
