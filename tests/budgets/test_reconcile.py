"""Rebuilding the Redis counters from the ledger, drift reports and the daily digest."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets.digests import digest_text, send_daily_digests
from budgets.keys import budget_keys
from budgets.reconcile import rebuild_counters
from budgets.tasks import reconcile_counters
from budgets.windows import previous_day
from gateway.models import UsageRecord
from gateway.money import usd_to_units
from reports import rollups
from tests.budgets.conftest import pin_clock
from tests.factories import make_budget, make_feature, make_team

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
_ids = itertools.count()


def spend(team, usd: str, at: datetime, feature=None, status=UsageRecord.Status.OK) -> None:
    """A ledger row, rolled up as the drain does it (reconcile and digests read roll-ups)."""
    record = UsageRecord.objects.create(
        request_id=f"req-{next(_ids)}",
        team=team,
        feature=feature,
        created_at=at,
        cost_usd=Decimal(usd),
        status=status,
    )
    rollups.apply([record])


def units(usd: str) -> int:
    return usd_to_units(Decimal(usd))


@pytest.fixture
def ledger():
    team = make_team()
    chat = make_feature(team, "chat")
    team_budget = make_budget(team, daily_limit_usd="10", monthly_limit_usd="100")
    chat_budget = make_budget(team, chat, daily_limit_usd="5", monthly_limit_usd="50")
    spend(team, "0.30", datetime(2026, 11, 27, 10, tzinfo=UTC), chat)
    spend(team, "0.0000000123", datetime(2026, 11, 27, 11, tzinfo=UTC))
    spend(team, "1.00", datetime(2026, 11, 26, 23, 59, tzinfo=UTC), chat)
    spend(team, "5.00", datetime(2026, 10, 31, 12, tzinfo=UTC))
    return team_budget, chat_budget


def _spent(redis_sync, budget, window_key) -> int:
    return int(redis_sync.get(budget_keys(budget.team_id, budget.id, window_key).spent) or 0)


def test_the_counters_rebuilt_after_a_flush_match_the_ledger(ledger, redis_sync):
    team_budget, chat_budget = ledger
    redis_sync.set(
        budget_keys(team_budget.team_id, team_budget.id, "2026-11-27").spent, units("0.2")
    )
    redis_sync.flushdb()

    report = rebuild_counters(redis=redis_sync, now=NOW)

    assert _spent(redis_sync, team_budget, "2026-11-27") == units("0.3000000123")
    assert _spent(redis_sync, team_budget, "2026-11") == units("1.3000000123")
    assert _spent(redis_sync, chat_budget, "2026-11-27") == units("0.30")
    assert _spent(redis_sync, chat_budget, "2026-11") == units("1.30")
    assert (report["checked"], report["raised"], len(report["drift"])) == (4, 4, 4)
    assert report["drift"][0] == {
        "budget_id": team_budget.id,
        "window": "daily",
        "window_key": "2026-11-27",
        "redis_units": 0,
        "ledger_units": units("0.3000000123"),
        "drift_units": -units("0.3000000123"),
    }
    assert redis_sync.ttl(budget_keys(team_budget.team_id, team_budget.id, "2026-11-27").spent) > 0


def test_a_counter_ahead_of_the_ledger_is_reported_not_lowered(ledger, redis_sync, caplog):
    _, chat_budget = ledger
    rebuild_counters(redis=redis_sync, now=NOW)
    key = budget_keys(chat_budget.team_id, chat_budget.id, "2026-11-27").spent
    redis_sync.incrby(key, units("0.05"))  # settled, not yet drained into the ledger

    report = rebuild_counters(redis=redis_sync, now=NOW)

    assert _spent(redis_sync, chat_budget, "2026-11-27") == units("0.35")
    assert report["raised"] == 0
    assert [d["drift_units"] for d in report["drift"]] == [units("0.05")]
    assert "redis 3500000000 units, ledger 3000000000 units" in caplog.text


def test_counters_below_the_ledger_are_a_warning_unless_the_reason_is_known(
    ledger, redis_sync, caplog
):
    caplog.set_level(logging.DEBUG, logger="budgets.reconcile")
    rebuild_counters(redis=redis_sync, now=NOW)
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 4  # spend was lost
    redis_sync.flushdb()
    caplog.clear()

    report = rebuild_counters(redis=redis_sync, now=NOW, expected="the store starts empty")

    assert report["raised"] == 4  # restored all the same
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 4 + ["INFO"]
    assert caplog.records[-1].getMessage() == (
        "4 budget counters restored from the ledger (the store starts empty)"
    )


def test_the_reconcile_task_rebuilds_the_current_windows(redis_sync):
    team = make_team()
    budget = make_budget(team, daily_limit_usd="1")
    spend(team, "0.25", timezone.now())

    report = reconcile_counters.delay().get()

    assert report["raised"] == 2
    day = timezone.now().date().isoformat()
    assert _spent(redis_sync, budget, day) == units("0.25")


def test_the_daily_digest_mails_each_team_its_spend_of_yesterday_once(
    ledger, mailoutbox, redis_sync
):
    team_budget, _ = ledger
    team_budget.alert_emails = "ops@example.com"
    team_budget.save()
    quiet = make_team("quiet")
    make_budget(quiet, daily_limit_usd="1", alert_emails="quiet@example.com")

    assert send_daily_digests(redis=redis_sync, now=NOW) == 1
    assert send_daily_digests(redis=redis_sync, now=NOW) == 0

    (mail,) = mailoutbox
    assert mail.to == ["ops@example.com"]
    assert mail.subject == "LLM gateway spend for acme on 2026-11-26"
    assert mail.body == (
        'Spend of team "acme" on 2026-11-26 (UTC): $1; requests: 1 served.\n  chat: $1 (1 served)'
    )


def test_the_digest_counts_served_refused_and_failed_requests_apart(ledger, redis_sync):
    team_budget, _ = ledger
    team = team_budget.team
    chat = team.features.get(name="chat")
    yesterday = datetime(2026, 11, 26, 12, tzinfo=UTC)
    for status in ("refused", "refused", "error", "stream_error"):
        spend(team, "0", yesterday, chat, status=status)

    text = digest_text(team=team, day=previous_day("UTC", NOW))

    assert text == (
        'Spend of team "acme" on 2026-11-26 (UTC): $1; requests: 1 served, 2 refused,'
        " 2 failed.\n  chat: $1 (1 served, 2 refused, 2 failed)"
    )
