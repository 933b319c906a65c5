"""The request pipeline: one entry, `run(operation, ...)`, for every API endpoint.

A request's way (docs/architecture.md): prepare (auth, the operation's validation, feature,
routing, estimate, cache key) → admission (gateway/admission.py: rate limits, cache lookup and
budget hold in one Redis round trip) → a cache hit, or the operation's `serve` (the fallback
loop `attempt_models`, then `finish`: settle, cache, ledger) → an `Answer`. Every error ends in
`fail` (the hold released, a record written) and the operation's error envelope.
What differs between endpoints is the `Operation` (gateway/operations/).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from redis.exceptions import RedisError

from budgets import services as budgets
from gateway import admission, cache, ceiling, circuit, inflight, ledger, runtime
from gateway.auth import authenticate, resolve_feature
from gateway.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    GatewayError,
    InvalidRequest,
    NoProviderAvailable,
    ProviderRejected,
)
from gateway.logs import request_id_var
from gateway.money import Cost, cost_of, format_usd
from gateway.operations.base import Answer, Operation
from gateway.providers import adapter_for
from gateway.providers.base import ProviderError, Usage, error_from_exception
from gateway.records import ledger_entry, record, refusal_record
from gateway.redaction import scrub_provider_text
from gateway.roundtrip import RoundTrip
from gateway.routing import chain_for, resolve_chain
from gateway.snapshot import BudgetSnap, FeatureSnap, KeySnap, ModelSnap, TeamSnap
from gateway.validation import parse_json

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
    admitting: asyncio.Future | None = None  # admission's round trip, if cancelled during it
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
    operation: Operation | None = None  # the endpoint being served (gateway/operations/)
    # Fallbacks above the price ceiling, by model name, with why (gateway/ceiling.py).
    ceiling_skips: Mapping[str, str] = field(default_factory=dict)

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


def new_call(operation: Operation) -> Call:
    call = Call(
        request_id="req_" + uuid.uuid4().hex,
        started=time.monotonic(),
        created_at=datetime.now(UTC),
        operation=operation,
    )
    # Every log line written while serving the request names it (gateway/logs.py); the
    # streaming generators set it again, as they run in the task that sends the response.
    request_id_var.set(call.request_id)
    return call


async def run(
    operation: Operation,
    *,
    headers: Headers,
    raw_body: bytes | Callable[[], bytes] | None = None,
    body: Any = None,
) -> Answer:
    """Serve one request of `operation`, from its raw JSON body or (`body`) a request already
    parsed, e.g. translated from another API's format. `raw_body` may be a callable that
    reads it, so a body too large is answered like any other error.

    Never raises a GatewayError: errors are answered in the operation's envelope, the hold
    released and a record written. A client that goes away (CancelledError) has its hold
    released in a task of its own."""
    call = new_call(operation)
    try:
        await prepare(call, headers=headers, raw_body=raw_body, body=body)
        hit = await admission.admit(call)
        if hit is not None:
            cost = await serve_cached(call, hit)
            return await operation.cached(call, hit, cost)
        return await operation.serve(call)
    except GatewayError as error:
        await fail(call, error)
        return operation.error_answer(error, call.headers(None))
    except Exception as exc:  # never a bare 500: the hold is released, a record written
        internal = internal_error(exc)
        await fail(call, internal)
        return operation.error_answer(internal, call.headers(None))
    except asyncio.CancelledError:
        # The client went away: release its budget hold now rather than when it expires.
        runtime.spawn(fail(call, ClientDisconnected("The client disconnected.")))
        raise


async def prepare(
    call: Call,
    *,
    headers: Headers,
    raw_body: bytes | Callable[[], bytes] | None = None,
    body: Any = None,
) -> None:
    """Authenticate, validate and route; raises GatewayError for anything wrong."""
    operation = call.operation
    if operation is None:
        raise ValueError("new_call(operation): a call is made for one operation")
    if callable(raw_body):
        raw_body = raw_body()  # the body is read (and its size checked) before anything else
    call.key, call.team, snapshot = await authenticate(
        headers.get("authorization"), getattr(headers, "meta", None)
    )
    if body is None:
        body = parse_json(raw_body or b"")
    # The body first: what is wrong with the request itself is said before which feature.
    call.body = operation.parse(call, body)
    call.feature = resolve_feature(call.key, call.team, headers.get("x-gateway-feature"))
    priority = (headers.get("x-gateway-priority") or "medium").strip().lower()
    if priority not in PRIORITIES:
        raise InvalidRequest(
            "X-Gateway-Priority must be low, medium or high.", param="X-Gateway-Priority"
        )
    try:
        call.cache_ttl = cache.ttl_for(
            header=headers.get("x-gateway-cache-ttl"),
            feature=call.feature,
            default=int(settings.GATEWAY["DEFAULT_CACHE_TTL_S"]),
        )
    except ValueError:
        raise InvalidRequest(
            "X-Gateway-Cache-TTL must be a whole number of seconds (0 = bypass).",
            param="X-Gateway-Cache-TTL",
        ) from None
    call.prompt_tokens = operation.estimate(call)
    max_tokens = operation.max_tokens(call)
    names, route = chain_for(
        snapshot,
        model=call.requested_model,
        priority=priority,
        prompt_tokens=call.prompt_tokens,
        max_tokens=max_tokens,
    )
    chain = resolve_chain(
        snapshot,
        model=call.requested_model,
        priority=priority,
        prompt_tokens=call.prompt_tokens,
        max_tokens=max_tokens,
        names=names,
        max_tokens_param="max_completion_tokens" if "max_completion_tokens" in call.body else None,
    )
    chain = operation.fit_chain(call, chain)
    call.ceiling_skips = ceiling.skips_for(snapshot, call.team, route, names, priority)
    call.budgets = call.team.budgets_for(call.feature)
    call.chain = _priced_under_hard_budget(call, chain)
    call.max_output, call.output_cap = operation.output_limits(call, max_tokens)
    call.deadline = call.started + settings.GATEWAY["REQUEST_DEADLINE_S"]
    if call.cache_ttl > 0:
        call.cache_key = operation.cache_key(call, chain)


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


async def attempt_models(call: Call, start):
    """The fallback loop: `start(adapter, request)` for each model until one succeeds.

    Retryable failures move on to the next model; the caller's own errors end the loop.
    Returns what `start` returned, with `call.served` set.
    """
    redis = runtime.aredis()
    operation = call.operation
    assert operation is not None  # new_call(operation)
    refused: list[tuple[str, str]] = []  # (parameter, message) of each model that cannot serve
    for index, model in enumerate(call.chain):
        provider = model.provider.name
        adapter = adapter_for(model.provider, runtime.http_client())
        cap = min(call.output_cap, model.max_output_tokens) if call.output_cap else None
        request, refusal = operation.provider_request(call, model, adapter, cap)
        if refusal is not None:  # skipped, and said so; a 400 when no model can serve
            refused.append(refusal)
            call.attempts.append(_attempt(model, f"cannot serve: {refusal[1]}", ""))
            continue
        if index and model.name in call.ceiling_skips:  # a fallback too dear: said so
            call.attempts.append(
                _attempt(model, ceiling.SKIP_ERROR, call.ceiling_skips[model.name])
            )
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
        slots = call.reservation.slots
    else:  # nothing was reserved (Redis was away then, failing open): spend without a hold
        slots = budgets.slots_for(call.budgets) if cost.units else ()
    # Under its request id even without a hold: its settled marker makes a spend that a
    # retried pipeline sends twice count once (redis-py's cluster pipeline sends again the
    # commands of a live node when another node's connection fails), and it settles a hold
    # that the admission took on a live node before another part of its round trip failed.
    spend = budgets.queue_spend(trip, slots=slots, request_id=call.request_id, units=cost.units)
    operation, served, cache_key = call.operation, call.served, call.cache_key
    if (
        status == "ok"
        and cache_key
        and body is not None
        and served is not None
        and operation is not None
        and operation.cacheable(call, body)
    ):
        answer = cache.CachedAnswer(
            body=body, usage=usage, model=served.name, provider=served.provider.name
        )
        cache.queue_put(trip, cache_key, answer, call.cache_ttl)
    entry = ledger_entry(
        call, usage=usage, cost=cost, status=status, error_type=error_type, response=body
    )
    ledger.queue_push(trip, entry)
    try:
        replies = await trip.send()
        if spend is not None:
            await budgets.after_spend(redis=redis, slots=slots, claimed=replies[spend])
    except (RedisError, OSError) as exc:
        log.warning(
            "could not settle %s (%s: %s); the ledger keeps the cost",
            call.request_id,
            type(exc).__name__,
            exc,
        )


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
    if call.admitting is not None:  # its hold is taken once the pipeline has run, not before
        await asyncio.wait([call.admitting])
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
        refusal=refusal_record(call, error),
    )
