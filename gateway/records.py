"""The ledger record of a call: what `services.finish`, `fail` and `serve_cached` write,
and what the metrics count (`metrics.observe`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway import ledger, metrics
from gateway.errors import GatewayError
from gateway.money import Cost
from gateway.providers.base import Usage
from gateway.redaction import redact

if TYPE_CHECKING:
    from gateway.services import Call


def refusal_record(call: Call, error: GatewayError) -> dict[str, Any] | None:
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
    team = call.team
    assert team is not None  # a call is recorded once its key is known
    entry = {
        "request_id": call.request_id,
        "created_at": call.created_at.isoformat(),
        "team_id": team.id,
        "feature_id": call.feature.id if call.feature else None,
        "api_key_id": call.key.id if call.key else None,
        "requested_model": call.requested_model[:128],
        "served_model": call.served.name if call.served else "",
        "provider": call.served.provider.name if call.served else "",
        "attempts": len(call.attempts),
        "attempt_log": call.attempts,
        "endpoint": call.operation.endpoint if call.operation else "",
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
    if team.store_content:
        content = call.operation.ledger_content(call) if call.operation else None
        entry["content"] = redact({"messages": content, "response": response})
    metrics.observe(
        entry, team_name=team.name, feature_name=call.feature.name if call.feature else ""
    )
    return entry
