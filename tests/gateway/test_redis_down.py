"""Redis unreachable: budgets fail closed with a clear 503 (or open where a team chose so),
the cache is bypassed, and the request's record still reaches the ledger."""

from __future__ import annotations

import asyncio

import pytest
from django.test import AsyncClient
from redis.exceptions import ConnectionError as RedisConnectionError

from budgets.keys import budget_keys
from budgets.models import Budget
from budgets.windows import current_windows
from gateway import ledger, roundtrip, runtime
from gateway.models import UsageRecord
from gateway.money import usd_to_units
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.gateway_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def redis_down(monkeypatch):
    dead = runtime.make_async_redis(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(runtime, "aredis", lambda: dead)


def setup_team(*, fail_open: bool, budget: bool = True) -> str:
    team = make_team("acme", budget_fail_open=fail_open)
    make_feature(team, "chatbot")
    make_model("sim-model", make_provider())
    if budget:
        make_budget(team, daily_limit_usd="10")
    return make_key(team)[1]


async def ask(secret: str):
    return await AsyncClient().post(
        "/v1/chat/completions", BODY, content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot"},
    )  # fmt: skip


async def test_budgets_fail_closed_with_a_503_by_default(redis_down):
    secret = await asyncio.to_thread(setup_team, fail_open=False)
    response = await ask(secret)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "budget_store_unavailable"
    assert "try again" in error["message"]
    assert response.headers["Retry-After"] == "5"
    assert await asyncio.to_thread(ledger.drain) == 1  # from the local spool
    record = await UsageRecord.objects.aget()
    assert (record.status, record.http_status) == ("refused", 503)


async def test_a_fail_open_team_is_served_without_cache_or_limits(redis_down):
    secret = await asyncio.to_thread(setup_team, fail_open=True)
    response = await ask(secret)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Cache"] == "bypass"
    assert response.json()["choices"][0]["message"]["content"]
    await asyncio.to_thread(ledger.drain)
    record = await UsageRecord.objects.aget()
    assert record.status == "ok" and record.cost_usd > 0


async def test_a_team_without_budgets_is_served_while_redis_is_down(redis_down):
    secret = await asyncio.to_thread(setup_team, fail_open=False, budget=False)
    response = await ask(secret)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Cache"] == "bypass"


async def test_a_fail_open_spend_sent_twice_by_a_retried_pipeline_counts_once(monkeypatch):
    """Redis fails the admission's round trip (the team is served without a hold), then is
    back for the settle, whose pipeline is sent twice: as redis-py's cluster pipeline sends
    again the commands of a live node when another node's connection fails mid-pipeline. The
    spend carries the request id, so its settled marker counts it once."""
    secret = await asyncio.to_thread(setup_team, fail_open=True)
    execute, trips = roundtrip.execute, 0

    async def admission_fails_then_each_pipeline_runs_twice(redis, commands):
        nonlocal trips
        trips += 1
        if trips == 1:
            raise RedisConnectionError("Connection closed by server.")
        await execute(redis, commands)
        return await execute(redis, commands)

    monkeypatch.setattr(roundtrip, "execute", admission_fails_then_each_pipeline_runs_twice)
    response = await ask(secret)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Cache"] == "bypass"
    monkeypatch.undo()
    await asyncio.to_thread(ledger.drain)
    record = await UsageRecord.objects.aget()
    budget = await Budget.objects.select_related("team").aget()
    window = current_windows(budget.team.timezone)[0]
    spent = runtime.sync_redis().get(budget_keys(budget.team_id, budget.pk, window.key).spent)
    assert int(spent) == usd_to_units(record.cost_usd) > 0
