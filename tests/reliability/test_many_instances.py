"""Two gateway processes on different ports, sharing one Redis and one PostgreSQL, behave as
one gateway: a hard budget, a key's rate limit, the cache and the budget alerts hold across
both."""

from __future__ import annotations

import asyncio
import collections
import time
from decimal import Decimal

import httpx
import openai
import pytest
from django.db.models import Sum

from budgets.models import BudgetAlert
from budgets.services import slots_for
from gateway import ledger, runtime
from gateway.models import UsageRecord
from gateway.money import usd_to_units
from gateway.snapshot import store
from tests.budgets.conftest import Receiver
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.processes import requires_postgres, requires_real_redis, wait_for

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
PROMPT = "Say hello, please"  # 5 prompt tokens at the loopback, and 5 answer tokens
COST = Decimal("0.01")  # 10 tokens at 1000 $/Mtok: what each answered request costs
HEADERS = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"}


def setup_team(openai_url: str, **key_options) -> tuple[object, str]:
    team = make_team("acme")
    make_feature(team, "chatbot")
    provider = make_provider(
        "openai", kind="openai", base_url=openai_url, api_key_env="TEST_OPENAI_API_KEY", options={}
    )
    make_model("gpt-4o", provider, input_price="1000", output_price="1000")
    return team, make_key(team, **key_options)[1]


async def spread(urls: list[str], secret: str, n: int, headers: dict = HEADERS) -> list:
    """n concurrent requests, alternating between the gateways."""
    body = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": PROMPT}]}
    auth = {**headers, "Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        return await asyncio.gather(
            *(
                http.post(f"{urls[i % len(urls)]}/chat/completions", json=body, headers=auth)
                for i in range(n)
            )
        )


def codes(responses) -> collections.Counter:
    return collections.Counter(
        (r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None)
        for r in responses
    )


def test_a_hard_budget_holds_across_two_instances(openai_server, gateways):
    team, secret = setup_team(openai_server.base_url)
    limit = COST * 20
    budget = make_budget(team, daily_limit_usd=limit, alert_thresholds=[])
    urls = [g.base_url for g in gateways(2)]

    responses = asyncio.run(spread(urls, secret, 100))

    counts = codes(responses)
    assert set(counts) == {(200, None), (429, "budget_exceeded")}, counts
    assert 1 <= counts[(200, None)] <= 20
    ledger.drain()
    spent = UsageRecord.objects.aggregate(total=Sum("cost_usd"))["total"]
    assert UsageRecord.objects.count() == 100
    assert spent == COST * counts[(200, None)] <= limit
    store().invalidate()
    slot = slots_for(list(store().snapshot_sync().teams[team.id].budgets))[0]
    redis = runtime.sync_redis()
    assert int(redis.get(slot.keys.spent)) == usd_to_units(spent)
    assert int(redis.get(slot.keys.reserved) or 0) == 0
    assert slot.budget.id == budget.id


def test_a_keys_rate_limit_holds_across_two_instances(openai_server, gateways):
    rpm = 10
    _, secret = setup_team(openai_server.base_url, rpm_limit=rpm)
    urls = [g.base_url for g in gateways(2)]

    started = time.monotonic()
    responses = asyncio.run(spread(urls, secret, 40))
    elapsed = time.monotonic() - started

    counts = codes(responses)
    assert set(counts) == {(200, None), (429, "rate_limited")}, counts
    # A token bucket of `rpm`, refilled continuously at rpm per minute while the burst lasts.
    assert rpm <= counts[(200, None)] <= rpm + int(rpm * elapsed / 60)
    assert len(openai_server.requests) == counts[(200, None)]


def test_an_answer_cached_through_one_instance_is_a_hit_on_the_other(openai_server, gateways):
    _, secret = setup_team(openai_server.base_url)
    first, second = gateways(2)
    headers = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "60"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
    answers = []
    for gateway in (first, second):
        sdk = openai.OpenAI(
            base_url=gateway.base_url, api_key=secret, max_retries=0, default_headers=headers
        )
        answers.append(sdk.chat.completions.with_raw_response.create(**body))

    assert [a.headers["x-gateway-cache"] for a in answers] == ["miss", "hit"]
    assert answers[0].parse().choices[0].message.content == (
        answers[1].parse().choices[0].message.content
    )
    assert answers[1].headers["x-gateway-cost-usd"] == "0"
    assert len(openai_server.requests) == 1


@pytest.fixture
def webhook():
    import threading

    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_each_alert_threshold_fires_once_across_two_instances(openai_server, gateways, webhook):
    team, secret = setup_team(openai_server.base_url)
    budget = make_budget(
        team,
        daily_limit_usd=COST * 10,
        hard=False,
        alert_thresholds=[50, 100],
        webhook_url=webhook.url,
    )
    urls = [g.base_url for g in gateways(2)]

    responses = asyncio.run(spread(urls, secret, 30))  # three times the soft limit

    assert codes(responses) == {(200, None): 30}
    # Alerts are sent (eager Celery) before the request that claimed them answers.
    alerts = BudgetAlert.objects.filter(budget=budget)
    assert sorted(alerts.values_list("window", "threshold", "channel", "status")) == [
        ("daily", 50, "webhook", "sent"),
        ("daily", 100, "webhook", "sent"),
    ]
    assert len(webhook.bodies) == 2
    wait_for(lambda: len(webhook.bodies) == 2, timeout=1, what="no more webhook posts")
