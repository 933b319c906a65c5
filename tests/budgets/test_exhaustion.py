"""A hard budget that refuses requests says so: one "budget exhausted" alert per budget and
window, sent by the first refusal whose request the remainder (limit - spent) cannot cover
(budgets/exhaustion.py; the rule is in docs/operations.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgets import exhaustion
from budgets.keys import budget_keys
from budgets.models import BudgetAlert
from gateway.errors import BudgetExceeded
from gateway.money import usd_to_units
from tests.budgets import steps
from tests.budgets.conftest import arun, pin_clock, team_snap
from tests.factories import make_budget, make_team
from tests.processes import requires_postgres, requires_real_redis

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
DAY = "2026-11-27"


def usd(text: str) -> int:
    return usd_to_units(Decimal(text))


@pytest.fixture
def budget(webhook):
    return make_budget(
        make_team(),
        daily_limit_usd="1",
        hard=True,
        alert_thresholds=[50, 80, 100],
        alert_emails="ops@example.com",
        webhook_url=webhook.url,
    )


def run(budget, *, spent: int = 0, held: int = 0, needs: list[int]) -> int:
    """Settle `spent`, hold `held` in flight, then send requests needing `needs`; the number
    refused."""
    return arun(_run, team=team_snap(budget.team_id), spent=spent, held=held, needs=needs)


async def _run(*, redis, team, spent: int, held: int, needs: list[int]) -> int:
    budgets = list(team.budgets)
    if spent:
        first = await steps.reserve(
            redis=redis, team=team, budgets=budgets, request_id="spend", units=spent
        )
        await steps.settle(redis=redis, reservation=first, actual_units=spent)
    if held:
        await steps.reserve(
            redis=redis, team=team, budgets=budgets, request_id="in-flight", units=held
        )
    refused = 0
    for i, units in enumerate(needs):
        try:
            await steps.reserve(
                redis=redis, team=team, budgets=budgets, request_id=f"r{i}", units=units
            )
        except BudgetExceeded:
            refused += 1
        await asyncio.sleep(0.05)  # the background claim runs
    return refused


def exhausted_alerts(budget):
    return BudgetAlert.objects.filter(budget=budget, threshold=100)


def test_refusals_the_remainder_cannot_cover_send_one_exhausted_alert(
    budget, webhook, mailoutbox, redis_sync
):
    assert run(budget, spent=usd("0.995"), needs=[usd("0.02")] * 5) == 5
    # One alert on each channel, though five requests were refused ($0.005 left < $0.02).
    assert sorted(exhausted_alerts(budget).values_list("channel", "status")) == [
        ("email", "sent"),
        ("webhook", "sent"),
    ]
    assert [m.subject for m in mailoutbox if "exhausted" in m.subject] == [
        f"Budget exhausted: Team budget: acme is refusing requests (daily {DAY})"
    ]
    [body] = [b for b in webhook.bodies if b["text"].startswith("Budget exhausted")]
    assert body["text"].startswith("Budget exhausted: requests are being refused. The daily team")
    assert "$0.995 spent of $1" in body["text"]
    assert redis_sync.hexists(budget_keys(budget.team_id, budget.id, DAY).alerted, "100")
    assert redis_sync.pttl(budget_keys(budget.team_id, budget.id, DAY).alerted) > 0

    # Later refusals in the window find the claim taken.
    run(budget, needs=[usd("0.02")] * 3)
    assert exhausted_alerts(budget).count() == 2
    assert len([m for m in mailoutbox if "exhausted" in m.subject]) == 1


def test_refusals_caused_by_requests_in_flight_are_not_exhaustion(budget, redis_sync):
    """$0.40 spent, $0.55 held by a request in flight: a $0.10 request is refused, but the
    $0.60 left covers it once the other settles (for less) or is released."""
    assert run(budget, spent=usd("0.40"), held=usd("0.55"), needs=[usd("0.10")]) == 1
    assert not exhausted_alerts(budget).exists()
    assert not redis_sync.hexists(budget_keys(budget.team_id, budget.id, DAY).alerted, "100")


def test_the_100_percent_alert_fires_when_the_remainder_is_below_the_need(budget, redis_sync):
    run(budget, spent=usd("0.975"), needs=[usd("0.03")])  # $0.025 left < $0.03
    [alert] = exhausted_alerts(budget).filter(channel="webhook")
    assert (alert.threshold, alert.spend_usd, alert.limit_usd) == (100, Decimal("0.975"), 1)


def test_a_window_whose_spend_reached_100_percent_sends_no_second_alert(budget, webhook):
    run(budget, spent=usd("1"), needs=[usd("0.01")] * 3)
    assert exhausted_alerts(budget).count() == 2  # the threshold's own, one per channel
    assert not [b for b in webhook.bodies if b["text"].startswith("Budget exhausted")]


def test_the_rule():
    assert exhaustion.is_exhausted(limit=100, spent=95, need=6)
    assert not exhaustion.is_exhausted(limit=100, spent=95, need=5)
    assert exhaustion.is_exhausted(limit=0, spent=0, need=1)


@pytest.mark.django_db(transaction=True)
@requires_postgres
@requires_real_redis
def test_concurrent_claims_send_one_alert(budget, webhook):
    """Twenty claims at once on the same loop and connection pool: one wins."""

    async def claims(*, redis):
        return await asyncio.gather(*(
            exhaustion.claim_and_alert(redis=redis, team_id=budget.team_id, budget_id=budget.id,
                                       window="daily", window_key=DAY, spent=usd("0.999"),
                                       claim_ttl_ms=60_000)
            for _ in range(20)
        ))  # fmt: skip

    assert sum(arun(claims)) == 1
