"""A hard budget that refuses requests says so: one "budget exhausted" alert per budget and
window, sent when what is left of the limit cannot cover a typical request
(budgets/exhaustion.py; the rule is in docs/operations.md)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgets import exhaustion, services
from budgets.keys import budget_keys
from budgets.models import BudgetAlert
from gateway.errors import BudgetExceeded
from gateway.models import UsageRecord
from gateway.money import usd_to_units
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


def history(team, cost: str, n: int = 10) -> None:
    """n served requests of `cost` each in the ledger: a typical request costs `cost`."""
    UsageRecord.objects.bulk_create(
        UsageRecord(request_id=uuid.uuid4().hex, created_at=NOW, team=team,
                    cost_usd=Decimal(cost), served_model="m", provider="p")
        for _ in range(n)
    )  # fmt: skip


def spend_then_refuse(budget, *, spent: int, needs: list[int]) -> int:
    return arun(_spend_then_refuse, team=team_snap(budget.team_id), spent=spent, needs=needs)


async def _spend_then_refuse(*, redis, team, spent: int, needs: list[int]):
    """Settle `spent` on the budget, then send requests needing `needs` (all refused)."""
    first = await services.reserve(
        redis=redis, team=team, budgets=list(team.budgets), request_id="spend", units=spent
    )
    await services.settle(redis=redis, reservation=first, actual_units=spent)
    refused = 0
    for i, units in enumerate(needs):
        try:
            await services.reserve(
                redis=redis, team=team, budgets=list(team.budgets), request_id=f"r{i}", units=units
            )
        except BudgetExceeded:
            refused += 1
        await asyncio.sleep(0.05)  # the background note runs
    return refused


def exhausted_alerts(budget):
    return BudgetAlert.objects.filter(budget=budget, threshold=100)


def test_refusals_when_a_typical_request_no_longer_fits_send_one_exhausted_alert(
    budget, webhook, mailoutbox, redis_sync
):
    history(budget.team, "0.01")  # a typical request: $0.01
    refused = spend_then_refuse(budget, spent=usd("0.995"), needs=[usd("0.02")] * 5)
    assert refused == 5
    # One alert on each channel, though five requests were refused ($0.005 left < $0.01).
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
    assert redis_sync.hexists(budget_keys(budget.id, DAY).alerted, "100")

    # Later refusals, even once the 30 s gate has passed, find the claim taken.
    redis_sync.delete(budget_keys(budget.id, DAY).refusal_check)
    spend_then_refuse(budget, spent=0, needs=[usd("0.02")])
    assert exhausted_alerts(budget).count() == 2
    assert len([m for m in mailoutbox if "exhausted" in m.subject]) == 1


def test_an_outsized_request_refused_while_typical_ones_fit_is_not_exhaustion(
    budget, webhook, mailoutbox, redis_sync
):
    history(budget.team, "0.01")
    refused = spend_then_refuse(budget, spent=usd("0.40"), needs=[usd("0.70")])
    assert refused == 1  # $0.60 left: this request cannot have it, a typical one can
    assert not exhausted_alerts(budget).exists()
    assert not redis_sync.hexists(budget_keys(budget.id, DAY).alerted, "100")
    found = exhaustion.check(budget_id=budget.id, window="daily", window_key=DAY,
                             units=usd("0.70"), redis=redis_sync)  # fmt: skip
    assert found["exhausted"] is False
    assert (found["remaining"], found["typical"]) == (usd("0.60"), usd("0.01"))


def test_the_100_percent_alert_fires_when_remaining_is_below_typical(budget, redis_sync):
    history(budget.team, "0.03")  # typical $0.03; $0.025 left is less
    spend_then_refuse(budget, spent=usd("0.975"), needs=[usd("0.05")])
    [alert] = exhausted_alerts(budget).filter(channel="webhook")
    assert (alert.threshold, alert.spend_usd, alert.limit_usd) == (100, Decimal("0.975"), 1)


def test_with_no_history_the_refused_request_is_the_typical_one(budget, redis_sync):
    spend_then_refuse(budget, spent=usd("0.99"), needs=[usd("0.02")])
    assert exhausted_alerts(budget).count() == 2


@pytest.mark.django_db(transaction=True)
@requires_postgres
@requires_real_redis
def test_concurrent_checks_claim_the_alert_once(budget, webhook, redis_sync):
    """The claim itself (HSETNX), without the gate: eight checks at once, one alert."""
    from concurrent.futures import ThreadPoolExecutor

    history(budget.team, "0.01")
    redis_sync.set(budget_keys(budget.id, DAY).spent, usd("0.999"))

    def one(_):
        return exhaustion.check(budget_id=budget.id, window="daily", window_key=DAY,
                                units=usd("0.02"), redis=redis_sync)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert sum(bool(r.get("claimed")) for r in results) == 1
    assert all(r["exhausted"] for r in results)
