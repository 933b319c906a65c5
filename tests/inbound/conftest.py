"""A tenant and two models on the loopback providers: gpt-4o-mini (OpenAI kind) and
claude-sonnet (Anthropic kind), each with a price, for the inbound-format tests."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import make_feature, make_key, make_loopback_providers, make_model, make_team

PRICES = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "claude-sonnet": (Decimal("3.00"), Decimal("15.00")),
}
MODELS = tuple(PRICES)


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    make_feature(team, "agent")
    key, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    for name, provider in (("gpt-4o-mini", oa), ("claude-sonnet", an)):
        make_model(
            name,
            provider,
            input_price=str(PRICES[name][0]),
            output_price=str(PRICES[name][1]),
            cached_input_per_mtok=PRICES[name][0] / 10,
            cache_write_per_mtok=PRICES[name][0] * Decimal("1.25"),
        )
    return {"team": team, "key": key, "secret": secret}


def expected_cost(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """Exact tokens × the model's prices, per million."""
    price_in, price_out = PRICES[model]
    return (input_tokens * price_in + output_tokens * price_out) / Decimal(1_000_000)


def drained() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))
