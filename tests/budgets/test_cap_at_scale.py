"""Issue 26 at its own scale, over HTTP against a served uvicorn.

The shipped defaults (gateway/defaults/config.yaml: gpt-4o-mini, 16,384 max output tokens,
falling back to claude-3-5-haiku at $4 per million output tokens), a $2 daily hard budget,
upstreams that answer in about a second (loopback servers speaking OpenAI's and Anthropic's
wire formats; every tenth OpenAI call fails so that the fallback serves it), and 100
concurrent requests without max_tokens.

- With the default reservation mode (`cap`), every request holds the output cap (2,048
  tokens by default) instead of the chain's 16,384: all 100 are served.
- In `strict` mode each holds the chain's largest max output at the dearest output price,
  about $0.066: the $2 fit only about 30 at a time and the rest are refused, at a spend of a
  fraction of a cent. That is the cost of strictness (docs/configuration.md).

In both, the spent counter sampled throughout the burst never passes the limit, and neither
does the ledger. Services mode runs the gateway as `uvicorn` in its own process (tests/
processes.py); embedded mode serves it from a thread of the test process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db.models import Sum

from budgets.keys import budget_keys
from budgets.models import Budget
from budgets.windows import current_windows
from gateway import ledger, tokens
from gateway.configfile import import_config, read_config_file
from gateway.models import Feature, LanguageModel, Provider, Team, UsageRecord
from gateway.money import Prices, usd_to_units, worst_case_units
from gateway.runtime import sync_redis
from gateway.snapshot import store
from tests.factories import make_budget, make_key
from tests.gateway_server import GatewayServer
from tests.loopback import fail, ok, slow
from tests.processes import ON_POSTGRES, GatewayProcess

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEFAULTS = Path(settings.BASE_DIR) / "gateway" / "defaults" / "config.yaml"
LIMIT = Decimal("2")
CONCURRENT = 100
UPSTREAM_S = 1.0


def body(i: int) -> dict:
    """Request i: 100 different questions of the same length (none is a cache hit)."""
    text = f"Question {i:03d}: summarise our refund policy in two lines."
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def serve(tmp_path, openai_server, anthropic_server, monkeypatch):
    """`serve(mode)`: the defaults imported, providers pointed at the loopback servers, a $2
    daily hard budget in reservation `mode` on the default team, and the gateway served over
    HTTP. Returns (base url, key secret, budget)."""
    import_config(read_config_file(DEFAULTS))
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant")
    Provider.objects.filter(name="openai").update(
        base_url=openai_server.base_url, api_key_env="TEST_OPENAI_API_KEY"
    )
    Provider.objects.filter(name="anthropic").update(
        base_url=anthropic_server.base_url, api_key_env="TEST_ANTHROPIC_API_KEY"
    )
    team = Team.objects.get(name="default")
    feature = Feature.objects.get(team=team, name="general")
    secret = make_key(team, feature)[1]
    started = []

    def start(mode: str) -> tuple[str, str, Budget]:
        budget = make_budget(team, daily_limit_usd=LIMIT, alert_thresholds=[], reservation=mode)
        if ON_POSTGRES and settings.REDIS_URL:
            gateway = GatewayProcess(redis_url=settings.REDIS_URL, log_dir=tmp_path)
            started.append(gateway)
            gateway.wait_ready(60)
            return gateway.url, secret, budget
        store().invalidate()
        gateway = GatewayServer().start()
        started.append(gateway)
        return gateway.base_url.removesuffix("/v1"), secret, budget

    yield start
    for gateway in started:
        gateway.stop()


def _script(openai_server, anthropic_server) -> None:
    """The warm-up answers at once; then each call takes ~1 s, and every tenth OpenAI call
    fails (503) so that claude-3-5-haiku serves it."""
    openai_server.script(
        ok(), *(fail(503) if i % 10 == 5 else slow(UPSTREAM_S) for i in range(CONCURRENT))
    )
    anthropic_server.script(*(slow(UPSTREAM_S) for _ in range(CONCURRENT)))


def _burst(url: str, secret: str, spent_key: str) -> tuple[list[httpx.Response], int]:
    """A warm-up request (a new key's first lookup is not what this measures), then 100
    concurrent requests. Returns the answers and the largest spend sampled meanwhile."""
    headers = {"Authorization": f"Bearer {secret}"}
    warm = httpx.post(f"{url}/v1/chat/completions", json=body(999), headers=headers, timeout=30)
    assert warm.status_code == 200, warm.text
    redis, peak, done = sync_redis(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], int(redis.get(spent_key) or 0))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=body(i), headers=headers)
                    for i in range(CONCURRENT)
                )
            )

    try:
        answers = asyncio.run(run())
    finally:
        done.set()
        sampler.join(5)
    peak[0] = max(peak[0], int(redis.get(spent_key) or 0))
    return answers, peak[0]


def _ledger_spend() -> Decimal:
    ledger.drain()
    return UsageRecord.objects.aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


def _spent_key(budget: Budget) -> str:
    daily, _ = current_windows(budget.team.timezone)
    return budget_keys(budget.team_id, budget.pk, daily.key).spent


def test_with_the_defaults_a_2_dollar_budget_serves_100_concurrent_requests(
    serve, openai_server, anthropic_server
):
    url, secret, budget = serve(Budget.Reservation.CAP)
    _script(openai_server, anthropic_server)
    answers, peak = _burst(url, secret, _spent_key(budget))

    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == CONCURRENT, {s: statuses.count(s) for s in set(statuses)}
    assert peak <= usd_to_units(LIMIT)
    assert _ledger_spend() <= LIMIT
    # The cap is said (header) and sent upstream under each provider's own name.
    assert {a.headers["X-Gateway-Output-Cap"] for a in answers} == {"2048"}
    calls = [r.body for r in openai_server.requests[1:]]
    assert {b.get("max_completion_tokens") for b in calls} == {2048}
    assert all("max_tokens" not in b for b in calls)
    fallbacks = [r.body for r in anthropic_server.requests]
    assert len(fallbacks) == CONCURRENT // 10
    assert {b["max_tokens"] for b in fallbacks} == {2048}
    assert {a.headers["X-Gateway-Model"] for a in answers} == {"gpt-4o-mini", "claude-3-5-haiku"}


def test_strict_mode_holds_the_model_max_and_refuses_most_of_them(
    serve, openai_server, anthropic_server
):
    url, secret, budget = serve(Budget.Reservation.STRICT)
    _script(openai_server, anthropic_server)
    answers, peak = _burst(url, secret, _spent_key(budget))

    statuses = [a.status_code for a in answers]
    served_count, refused = statuses.count(200), statuses.count(429)
    assert served_count + refused == CONCURRENT
    # Each holds 16,384 output tokens at haiku's $4 (the chain's dearest) plus its prompt's
    # upper bound at $0.80: about $0.066, so about 30 fit in $2 at once.
    prices = [
        Prices(m.input_per_mtok, m.output_per_mtok, m.cached_input_per_mtok, m.cache_write_per_mtok)
        for m in LanguageModel.objects.filter(name__in=["gpt-4o-mini", "claude-3-5-haiku"])
    ]
    held = worst_case_units(
        input_tokens=tokens.prompt_upper_bound(body(0)), output_tokens=16384, prices=prices
    )
    fit = usd_to_units(LIMIT) // held
    assert 25 <= fit <= 31
    # Requests that arrive after an earlier one settled find its hold freed: at least `fit`
    # are served, and on a loaded machine a few more; most are refused either way.
    assert fit <= served_count < CONCURRENT // 2, (served_count, fit)
    assert peak <= usd_to_units(LIMIT)
    spend = _ledger_spend()
    assert spend < Decimal("0.01")  # refused at a fraction of a cent of $2
    assert all("X-Gateway-Output-Cap" not in a.headers for a in answers)
    assert all("max_completion_tokens" not in r.body for r in openai_server.requests)

    # The refusal a person can follow up: the message as it was, its figures on the record.
    refusal = next(a for a in answers if a.status_code == 429).json()["error"]
    assert "reserved by requests in flight" in refusal["message"]
    record = UsageRecord.objects.filter(status="refused").exclude(refusal=None).first()
    assert record is not None and record.http_status == 429
    figures = record.refusal
    assert figures["budget_id"] == budget.pk and figures["window"] == "daily"
    assert Decimal(figures["limit_usd"]) == LIMIT
    assert Decimal(figures["needed_usd"]) * 10**10 == held
    assert (
        Decimal(figures["spent_usd"])
        + Decimal(figures["reserved_usd"])
        + Decimal(figures["needed_usd"])
        > LIMIT
    )
    assert Decimal(figures["reserved_usd"]) > Decimal(figures["spent_usd"])
    assert figures["output_tokens_held"] == 16384
