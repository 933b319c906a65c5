"""A client that hangs up mid-request leaves no budget hold behind and still leaves a record."""

from __future__ import annotations

import time

import httpx
import pytest
from asgiref.sync import async_to_sync

from budgets.services import budget_status
from gateway import ledger, runtime
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
    for _ in range(50):
        if ledger.pending():
            break
        time.sleep(0.05)
    assert reserved_units(team) == 0
    ledger.drain()
    record = UsageRecord.objects.exclude(status="ok").get()
    assert record.error_type == "client_disconnected" and record.cost_usd == 0
