"""Requests in flight (gateway/inflight.py): every settled, refused or cached request removes
its entry; a request whose process died becomes one `lost` record, billed once, even when
two sweepers run at once or the request settles late."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import orjson
import pytest
from django.db import connection
from django.test import AsyncClient

from budgets.services import budget_status
from gateway import admission, inflight, ledger, runtime, services
from gateway.models import UsageRecord
from gateway.money import Cost, cost_of
from gateway.operations.chat import CHAT
from gateway.providers.base import Usage
from gateway.snapshot import store
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "where am I"}]}
HEADERS = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "60"}


def setup_team(limit: str = "10") -> tuple[int, str]:
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_model("sim-model", make_provider(), input_price="1", output_price="2")
    make_budget(team, daily_limit_usd=limit)
    return team.id, make_key(team)[1]


async def ask(secret: str, **over):
    return await AsyncClient().post(
        "/v1/chat/completions",
        {**BODY, **over},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", **HEADERS},
    )


async def test_settled_cached_and_refused_requests_leave_nothing_in_flight():
    _, secret = await asyncio.to_thread(setup_team)
    redis = runtime.sync_redis()
    assert (await ask(secret)).status_code == 200
    assert (await ask(secret))["X-Gateway-Cache"] == "hit"
    streamed = await ask(secret, stream=True, messages=[{"role": "user", "content": "stream"}])
    assert streamed.status_code == 200
    b"".join([chunk async for chunk in streamed.streaming_content])
    refused = await ask(secret, max_tokens=10**9)  # far past the budget
    assert refused.status_code in (400, 402, 429)
    assert redis.zcard(inflight.ZSET) == 0
    assert not redis.keys(inflight.PREFIX + "*")


async def admitted_then_dead(secret: str) -> services.Call:
    """A request admitted by the real pipeline whose process then died (nothing more ran)."""
    call = services.new_call(CHAT)
    await services.prepare(
        call,
        headers={"authorization": f"Bearer {secret}", "x-gateway-feature": "chatbot",
                 "x-gateway-cache-ttl": "0"},
        raw_body=orjson.dumps({**BODY, "max_tokens": 100}),
    )  # fmt: skip
    assert await admission.admit(call) is None
    return call


async def windows(team_id: int) -> list[tuple[int, int]]:
    store().invalidate()
    budgets = list((await store().snapshot()).teams[team_id].budgets)
    return [
        (w.spent, w.reserved) for w in await budget_status(redis=runtime.aredis(), budgets=budgets)
    ]


async def test_a_lost_request_is_billed_once_even_when_it_settles_late(settings):
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 0.0, "LOST_GRACE_S": 0.0}
    team_id, secret = await asyncio.to_thread(setup_team)
    call = await admitted_then_dead(secret)
    (spent, held), *_ = await windows(team_id)
    assert spent == 0 and held > 0
    await asyncio.sleep(0.01)

    assert await asyncio.to_thread(inflight.sweep) == 1
    model = (await store().snapshot()).models["sim-model"]
    billed = cost_of(Usage(input_tokens=call.prompt_tokens, reported=False), model.prices)
    assert (await windows(team_id))[0] == (billed.units, 0)

    # The request was not dead after all: it settles now, with its real cost.
    call.served = call.chain[0]
    real = Cost(billed.usd * 3)
    await services.finish(call, usage=Usage(input_tokens=5, output_tokens=9), cost=real, body=None)
    assert (await windows(team_id))[0] == (billed.units, 0)  # not billed twice
    assert await asyncio.to_thread(ledger.drain) == 1
    (row,) = await asyncio.to_thread(lambda: list(UsageRecord.objects.all()))
    assert (row.request_id, row.status, row.cost_usd) == (call.request_id, "lost", billed.usd)
    assert row.reserved_usd > row.cost_usd


async def test_a_request_that_settles_in_time_is_never_swept(settings):
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 60.0}
    team_id, secret = await asyncio.to_thread(setup_team)
    call = await admitted_then_dead(secret)
    assert await asyncio.to_thread(inflight.sweep) == 0  # before its deadline
    call.served = call.chain[0]
    await services.finish(
        call, usage=Usage(input_tokens=5, output_tokens=9), cost=Cost(Decimal(0)), body=None
    )
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 0.0, "LOST_GRACE_S": 0.0}
    assert await asyncio.to_thread(inflight.sweep) == 0
    assert runtime.sync_redis().zcard(inflight.ZSET) == 0


async def test_two_sweepers_at_once_bill_each_lost_request_once(settings):
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 0.0, "LOST_GRACE_S": 0.0}
    team_id, secret = await asyncio.to_thread(setup_team, "1000")
    calls = [await admitted_then_dead(secret) for _ in range(20)]
    await asyncio.sleep(0.01)
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def sweeper() -> None:
        barrier.wait()
        try:
            for _ in range(3):
                counts.append(inflight.sweep(limit=7))  # small claims, so that they interleave
        finally:
            connection.close()

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(counts) == 20
    assert ledger.queued() == 20  # one record each, no repeat
    await asyncio.to_thread(ledger.drain)
    ids = await asyncio.to_thread(
        lambda: set(UsageRecord.objects.filter(status="lost").values_list("request_id", flat=True))
    )
    assert ids == {c.request_id for c in calls}
    model = (await store().snapshot()).models["sim-model"]
    each = cost_of(Usage(input_tokens=calls[0].prompt_tokens, reported=False), model.prices)
    assert (await windows(team_id))[0] == (20 * each.units, 0)


def test_an_unreadable_entry_is_dropped_not_retried_forever(settings):
    redis = runtime.sync_redis()
    redis.hset(inflight.key("req_broken"), "r", b"not json")
    redis.zadd(inflight.ZSET, {"req_broken": 0})
    assert inflight.sweep() == 0
    assert runtime.sync_redis().zcard(inflight.ZSET) == 0
    assert not redis.exists(inflight.key("req_broken"))
