"""Threshold alerts: claimed once per budget, window and threshold, sent by e-mail and webhook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgets.keys import budget_keys
from budgets.models import BudgetAlert
from budgets.tasks import send_budget_alert
from gateway.money import usd_to_units
from tests.budgets import steps
from tests.budgets.conftest import arun, pin_clock, team_snap
from tests.factories import make_budget, make_team

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
CENTS_4 = usd_to_units(Decimal("0.04"))


@pytest.fixture
def budget(webhook):
    team = make_team()
    return make_budget(
        team,
        daily_limit_usd="1",
        hard=False,
        alert_thresholds=[50, 80, 100],
        alert_emails="ops@example.com, cfo@example.com",
        webhook_url=webhook.url,
    )


async def _settle_many(*, redis, team, count):
    async def one(i):
        reservation = await steps.reserve(
            redis=redis,
            team=team,
            budgets=list(team.budgets),
            request_id=f"r{i}",
            units=CENTS_4,
            now=NOW,
        )
        await asyncio.sleep(0)
        await steps.settle(redis=redis, reservation=reservation, actual_units=CENTS_4)

    await asyncio.gather(*(one(i) for i in range(count)))


def test_each_threshold_alerts_once_under_concurrent_crossings(
    budget, webhook, mailoutbox, redis_sync
):
    arun(_settle_many, team=team_snap(budget.team_id), count=30)  # $1.20 of $1

    alerts = BudgetAlert.objects.filter(budget=budget)
    assert sorted(alerts.values_list("threshold", "channel", "status", "attempt")) == [
        (t, channel, "sent", 1) for t in (50, 80, 100) for channel in ("email", "webhook")
    ]
    assert {a.window_key for a in alerts} == {"2026-11-27"}
    assert sorted(m.subject for m in mailoutbox) == [
        f"Budget alert: Team budget: acme reached {t}% (daily 2026-11-27)" for t in (100, 50, 80)
    ]
    assert all(m.to == ["ops@example.com", "cfo@example.com"] for m in mailoutbox)
    reached = sorted(int(b["text"].split("reached ")[1].split("%")[0]) for b in webhook.bodies)
    assert reached == [50, 80, 100]
    assert any(
        b["text"].startswith(
            "Budget alert: the daily team budget of acme (2026-11-27) has reached 50% of its limit"
        )
        for b in webhook.bodies
    )
    assert set(redis_sync.hkeys(budget_keys(budget.team_id, budget.id, "2026-11-27").alerted)) == {
        b"50",
        b"80",
        b"100",
    }


def test_a_failed_webhook_is_retried_and_every_attempt_recorded(budget, webhook, mailoutbox):
    webhook.statuses = [500, 503]
    send_budget_alert.delay(budget.id, "daily", "2026-11-27", 80, usd_to_units(Decimal("0.85")))

    attempts = BudgetAlert.objects.filter(budget=budget, channel="webhook").order_by("attempt")
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "sent")]
    assert "503" in attempts[1].error
    assert attempts[2].spend_usd == Decimal("0.85") and attempts[2].limit_usd == Decimal("1")
    assert len(mailoutbox) == 1  # the e-mail went out once, on the first attempt
    assert len(webhook.bodies) == 3


def test_running_the_alert_task_twice_sends_once(budget, webhook, mailoutbox):
    for _ in range(2):
        send_budget_alert.delay(budget.id, "daily", "2026-11-27", 50, usd_to_units(Decimal(".5")))
    assert len(mailoutbox) == 1
    assert len(webhook.bodies) == 1
    assert BudgetAlert.objects.filter(budget=budget).count() == 2


def test_a_threshold_not_enqueued_is_claimed_again_by_the_next_spend(
    budget, webhook, monkeypatch, redis_sync
):
    team = team_snap(budget.team_id)

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(send_budget_alert, "delay", broker_down)
        arun(
            steps.record_spend,
            team=team,
            budgets=list(team.budgets),
            units=usd_to_units(Decimal("0.6")),
            now=NOW,
        )
    assert redis_sync.hkeys(budget_keys(budget.team_id, budget.id, "2026-11-27").alerted) == []
    arun(steps.record_spend, team=team, budgets=list(team.budgets), units=1, now=NOW)
    assert [b["text"].split("reached ")[1][:3] for b in webhook.bodies] == ["50%"]


def test_a_budget_without_a_limit_in_the_window_sends_nothing(webhook, mailoutbox):
    budget = make_budget(
        make_team(), monthly_limit_usd="5", webhook_url=webhook.url, alert_emails="ops@example.com"
    )
    send_budget_alert.delay(budget.id, "daily", "2026-11-27", 50, 10)
    assert (len(mailoutbox), len(webhook.bodies)) == (0, 0)
    assert not BudgetAlert.objects.exists()
