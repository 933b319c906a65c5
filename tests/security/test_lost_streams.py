"""Issue 16, medium 4: SIGKILL during a stream lost its records.

As it was found: streams killed mid-answer (the gateway process SIGKILLed) left no ledger
rows, their holds stayed for the reservation's 300 s, and the tokens already delivered were
never billed. Now every admitted request is registered as in flight (gateway/inflight.py);
the sweep turns those past their deadline into one `lost` ledger row each, billed once at the
estimated delivered cost, with the reserved worst case beside it, and releases the holds.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from decimal import Decimal

import openai
import pytest
from django.conf import settings
from redis.asyncio import Redis

from budgets.services import budget_status
from gateway import ledger, runtime, tokens
from gateway.models import UsageRecord
from gateway.money import Prices, cost_of, units_to_usd, worst_case_units
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
from tests.loopback import stall
from tests.loopback_wire import pieces
from tests.processes import requires_postgres, requires_real_redis, wait_for

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
STREAMS = 3
FRAMES = 6  # the role chunk, then five words; then the provider stalls
TEXT = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
MAX_TOKENS = 200
BODY = {
    "model": "gpt-4o",
    "max_tokens": MAX_TOKENS,
    "stream": True,
    "messages": [{"role": "user", "content": "Write me something long, please"}],
}
HEADERS = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"}
PRICE = Decimal(1000)  # $/Mtok both ways: figures far from zero


def windows(team_id: int) -> list[tuple[int, int]]:
    """(spent, reserved) of each budget window of the team, as Redis has them now."""
    store().invalidate()
    budgets = list(store().snapshot_sync().teams[team_id].budgets)

    async def read():
        async with Redis.from_url(settings.REDIS_URL) as redis:
            return [
                (w.spent, w.reserved) for w in await budget_status(redis=redis, budgets=budgets)
            ]

    return asyncio.run(read())


def test_streams_killed_mid_answer_become_one_lost_row_each_and_release_their_holds(
    openai_server, gateways
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    provider = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    make_model("gpt-4o", provider, input_price=str(PRICE), output_price=str(PRICE))
    make_budget(team, daily_limit_usd="100", alert_thresholds=[])
    secret = make_key(team)[1]
    openai_server.script(*[stall(after=FRAMES, text=TEXT)] * STREAMS)
    (gateway,) = gateways(1, GATEWAY_REQUEST_DEADLINE_S="4", GATEWAY_LOST_GRACE_S="1")

    received: list[list[str]] = [[] for _ in range(STREAMS)]
    ids: list[str] = [""] * STREAMS
    failures: list[Exception] = []

    def read_stream(i: int) -> None:
        sdk = openai.OpenAI(
            base_url=gateway.base_url, api_key=secret, max_retries=0, default_headers=HEADERS
        )
        try:
            raw = sdk.chat.completions.with_raw_response.create(**BODY)
            ids[i] = raw.headers["x-request-id"]
            for chunk in raw.parse():
                received[i].append(chunk.choices[0].delta.content or "")
        except Exception as exc:  # the connection drops when the gateway is killed
            failures.append(exc)

    clients = [threading.Thread(target=read_stream, args=(i,)) for i in range(STREAMS)]
    for c in clients:
        c.start()
    wait_for(
        lambda: all(len(r) == FRAMES for r in received),
        timeout=20,
        what="every stream to deliver its first frames",
    )
    time.sleep(2.0)  # the progress ticker (once a second) has reported them
    gateway.signal(signal.SIGKILL)
    gateway.process.wait(10)
    killed_at = time.monotonic()
    for c in clients:
        c.join(10)
    assert len(failures) == STREAMS  # every client saw its answer cut

    # As found: no ledger row, the holds stay.
    prompt = tokens.estimate_prompt(BODY)
    hold = worst_case_units(
        input_tokens=tokens.prompt_upper_bound(BODY),
        output_tokens=MAX_TOKENS,
        prices=[Prices(PRICE, PRICE, None, None)],
    )
    assert windows(team.id) == [(0, STREAMS * hold)] * 2
    ledger.drain()
    assert UsageRecord.objects.count() == 0

    from gateway import inflight  # the fix (imported here: the above holds on main too)

    # Nothing is lost before its deadline (4 s) plus the grace (1 s) ...
    assert inflight.sweep() == 0
    # ... and after it, each killed stream becomes exactly one lost row.
    time.sleep(max(0.0, 5.5 - (time.monotonic() - killed_at)))
    assert inflight.sweep() == STREAMS
    assert inflight.sweep() == 0  # a second sweeper finds nothing to bill again
    assert ledger.drain() == STREAMS
    rows = {r.request_id: r for r in UsageRecord.objects.all()}
    assert set(rows) == set(ids)

    delivered = "".join(pieces(TEXT)[: FRAMES - 1])
    output = tokens.estimate_text(delivered)
    cost = cost_of(
        Usage(input_tokens=prompt, output_tokens=output, reported=False),
        Prices(PRICE, PRICE, None, None),
    )
    for row in rows.values():
        assert row.status == "lost"
        assert row.stream and row.estimated
        assert (row.input_tokens, row.output_tokens) == (prompt, output)
        assert row.cost_usd == cost.usd > 0
        assert row.reserved_usd == units_to_usd(hold)
        assert row.served_model == "gpt-4o"
    # Holds released; the delivered cost billed once per stream.
    assert windows(team.id) == [(STREAMS * cost.units, 0)] * 2
    assert runtime.sync_redis().zcard(inflight.ZSET) == 0
