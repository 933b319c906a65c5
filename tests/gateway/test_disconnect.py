"""A client that hangs up mid-request leaves no budget hold behind and still leaves a record."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from budgets.services import budget_status
from gateway import inflight, ledger, roundtrip, runtime
from gateway.models import UsageRecord
from gateway.snapshot import store
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.loopback import ok, slow

pytestmark = pytest.mark.django_db(transaction=True)


def reserved_units(team) -> int:
    async def read():
        try:
            snapshot = await store().snapshot()
            statuses = await budget_status(
                redis=runtime.aredis(), budgets=list(snapshot.teams[team.id].budgets)
            )
            return sum(s.reserved for s in statuses)
        finally:
            await runtime.close_loop_clients()

    return async_to_sync(read)()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_hanging_up_releases_its_budget_hold(
    gateway_server, openai_server, monkeypatch, stream
):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    make_model("gpt-4o", oa)
    make_budget(team, daily_limit_usd="100")
    openai_server.script(ok(), slow(3.0))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Gateway-Feature": "chatbot",
        "X-Gateway-Cache-TTL": "0",
    }
    url = f"{gateway_server.base_url}/chat/completions"
    assert httpx.post(url, json=body, headers=headers).status_code == 200  # warm: config, pool
    ledger.drain()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=headers, timeout=0.5)
    records = UsageRecord.objects.filter(team=team).exclude(status="ok")
    deadline = time.monotonic() + 10
    while not records.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        ledger.drain()
    assert reserved_units(team) == 0  # released before the record is pushed
    record = records.get()
    assert record.error_type == "client_disconnected" and record.cost_usd == 0


async def test_a_client_hanging_up_while_its_admission_is_on_the_wire_leaves_no_hold(
    monkeypatch,
):
    """The admission script runs in a pipeline shared with other requests, so it runs even
    when the request that queued it is cancelled while it waits: the hold it takes (and the
    in-flight entry) must still be undone, once the script has run, not before."""
    team = await asyncio.to_thread(make_team, "acme")
    await asyncio.to_thread(make_feature, team, "chatbot")
    _, secret = await asyncio.to_thread(make_key, team)
    await asyncio.to_thread(make_model, "sim-model", await asyncio.to_thread(make_provider))
    await asyncio.to_thread(make_budget, team, daily_limit_usd="100")
    on_the_wire, answer = asyncio.Event(), asyncio.Event()
    execute = roundtrip.execute

    async def slow_first_pipeline(redis, commands):
        if not on_the_wire.is_set():
            on_the_wire.set()
            await answer.wait()
        return await execute(redis, commands)

    def ask():
        return AsyncClient().post(
            "/v1/chat/completions",
            {"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot",
                     "X-Gateway-Cache-TTL": "0"},
        )  # fmt: skip

    assert (await ask()).status_code == 200  # Redis knows the scripts from now on
    await asyncio.to_thread(ledger.drain)
    monkeypatch.setattr(roundtrip, "execute", slow_first_pipeline)
    request = asyncio.create_task(ask())
    await on_the_wire.wait()
    request.cancel()  # the client hangs up while its admission waits for Redis
    await asyncio.sleep(0.05)
    answer.set()  # then the pipeline runs, the admission script and its hold with it
    with contextlib.suppress(asyncio.CancelledError):
        await request
    for _ in range(100):
        if ledger.pending():
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # anything that would still follow the record
    snapshot = await store().snapshot()
    statuses = await budget_status(
        redis=runtime.aredis(), budgets=list(snapshot.teams[team.id].budgets)
    )
    assert sum(s.reserved for s in statuses) == 0
    assert await runtime.aredis().zcard(inflight.ZSET) == 0
    assert await asyncio.to_thread(ledger.drain) == 1
    record = await asyncio.to_thread(UsageRecord.objects.exclude(status="ok").get)
    assert record.error_type == "client_disconnected"
