"""A gateway process killed mid-request leaves no budget locked (its hold expires); one stopped
with SIGTERM finishes its in-flight requests and flushes their ledger records on the way out."""

from __future__ import annotations

import asyncio
import signal
import threading
from decimal import Decimal

import httpx
import openai
import pytest
from django.conf import settings
from redis.asyncio import Redis

from budgets.services import budget_status
from gateway import ledger, tokens
from gateway.models import UsageRecord
from gateway.money import Prices, units_to_usd, usd_to_units, worst_case_units
from gateway.snapshot import store
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.loopback import slow
from tests.processes import requires_postgres, requires_real_redis, wait_for

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
MAX_TOKENS = 100
BODY = {
    "model": "gpt-4o",
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": "Say hello, please"}],
}
HEADERS = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"}


def setup_team(openai_url: str, *, limit_usd: Decimal | None = None) -> tuple[object, str]:
    team = make_team("acme")
    make_feature(team, "chatbot")
    provider = make_provider(
        "openai", kind="openai", base_url=openai_url, api_key_env="TEST_OPENAI_API_KEY", options={}
    )
    make_model("gpt-4o", provider, input_price="1000", output_price="1000")
    if limit_usd is not None:
        make_budget(team, daily_limit_usd=limit_usd, alert_thresholds=[])
    return team, make_key(team)[1]


def worst_case() -> int:
    """The units the gateway reserves for BODY: 1000 $/Mtok both ways."""
    price = Decimal(1000)
    return worst_case_units(
        input_tokens=tokens.prompt_upper_bound(BODY),
        output_tokens=MAX_TOKENS,
        prices=[Prices(price, price, None, None)],
    )


def reserved_units(team_id: int) -> list[int]:
    store().invalidate()
    budgets = list(store().snapshot_sync().teams[team_id].budgets)

    async def read() -> list[int]:
        async with Redis.from_url(settings.REDIS_URL) as redis:
            return [w.reserved for w in await budget_status(redis=redis, budgets=budgets)]

    return asyncio.run(read())


def test_a_killed_workers_reservation_expires_and_does_not_refuse_the_next_request(
    openai_server, gateways
):
    hold = worst_case()
    limit = units_to_usd(hold * 3 // 2).quantize(Decimal("0.0001"))  # room for one hold only
    team, secret = setup_team(openai_server.base_url, limit_usd=limit)
    openai_server.script(slow(30))  # the first request hangs upstream; later ones are quick
    doomed, survivor = gateways(2, GATEWAY_RESERVATION_TTL_S="2")

    errors: list[Exception] = []

    def ask_doomed() -> None:
        try:
            httpx.post(
                f"{doomed.base_url}/chat/completions",
                json=BODY,
                timeout=30,
                headers={**HEADERS, "Authorization": f"Bearer {secret}"},
            )
        except httpx.TransportError as exc:
            errors.append(exc)

    client = threading.Thread(target=ask_doomed)
    client.start()
    wait_for(lambda: openai_server.requests, timeout=15, what="the request to reach upstream")
    doomed.signal(signal.SIGKILL)
    doomed.process.wait(10)

    held = reserved_units(team.id)
    assert held == [hold, hold]  # the daily and monthly windows, held by a dead process
    assert hold + hold > usd_to_units(limit)  # while held, the next request would be refused
    wait_for(lambda: reserved_units(team.id) == [0, 0], timeout=6, what="the hold to expire")

    sdk = openai.OpenAI(
        base_url=survivor.base_url, api_key=secret, max_retries=0, default_headers=HEADERS
    )
    answer = sdk.chat.completions.create(**BODY)
    assert answer.choices[0].message.content
    client.join(10)
    assert errors  # the killed process's client saw its connection drop


def test_sigterm_finishes_in_flight_requests_and_flushes_their_records(openai_server, gateways):
    _, secret = setup_team(openai_server.base_url)
    openai_server.script(*[slow(2)] * 5)
    # A drain interval longer than the test: only the shutdown drain can write the records.
    (gateway,) = gateways(1, GATEWAY_LEDGER_IN_PROCESS="1", GATEWAY_LEDGER_FLUSH_INTERVAL_S="600")
    answers: list = []

    async def five() -> list:
        async with openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key=secret, max_retries=0, default_headers=HEADERS
        ) as sdk:
            return await asyncio.gather(
                *(sdk.chat.completions.with_raw_response.create(**BODY) for _ in range(5))
            )

    client = threading.Thread(target=lambda: answers.extend(asyncio.run(five())))
    client.start()
    wait_for(lambda: len(openai_server.requests) == 5, timeout=15, what="5 requests upstream")
    assert UsageRecord.objects.count() == 0
    gateway.signal(signal.SIGTERM)
    client.join(30)
    gateway.process.wait(30)

    assert gateway.process.returncode in (0, -signal.SIGTERM), gateway.output()
    assert [a.status_code for a in answers] == [200] * 5
    ids = {a.headers["x-request-id"] for a in answers}
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == ids
    assert ledger.queued() == 0
