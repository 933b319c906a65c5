"""Budgets across the next month boundary in a team's own time zone, derived from today.

No instant here is written down: each test takes the next month start after the real now in
the team's zone, and moves the process clock to either side of it. The counters live in the
real store (Redis or the stand-in), which keeps its own clock, so this also proves that no
counter written near a boundary is expired by a store whose clock disagrees.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from budgets.keys import SPENT_GRACE_S, budget_keys
from gateway.errors import BudgetExceeded
from gateway.money import usd_to_units
from tests.budgets import steps
from tests.budgets.conftest import arun, team_snap
from tests.factories import make_budget, make_team

pytestmark = pytest.mark.django_db


def U(usd: str) -> int:
    return usd_to_units(Decimal(usd))


def next_month_start(tz_name: str) -> datetime:
    """Midnight on the first of next month in `tz_name`, as an aware UTC instant."""
    tz = zoneinfo.ZoneInfo(tz_name)
    local = datetime.now(UTC).astimezone(tz)
    first = (local.date().replace(day=1) + timedelta(days=32)).replace(day=1)
    return datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(UTC)


# Tokyo's month starts while UTC is still in the old one; Los Angeles's when UTC is already
# in the new one.
@pytest.mark.parametrize("tz_name", ["Asia/Tokyo", "America/Los_Angeles"])
def test_a_monthly_budget_resets_at_midnight_in_the_teams_zone(tz_name, redis_sync):
    boundary = next_month_start(tz_name)
    tz = zoneinfo.ZoneInfo(tz_name)
    before, after = boundary - timedelta(minutes=10), boundary + timedelta(minutes=10)
    old_month = before.astimezone(tz).strftime("%Y-%m")
    new_month = after.astimezone(tz).strftime("%Y-%m")
    assert old_month != new_month
    # The UTC calendar disagrees with the team's on one side of the boundary.
    assert (before.strftime("%Y-%m"), after.strftime("%Y-%m")) != (old_month, new_month)

    team = make_team(timezone=tz_name)
    budget = make_budget(team, monthly_limit_usd="1", alert_thresholds=[])
    snap = team_snap(team.id)

    with time_machine.travel(before, tick=True):
        arun(steps.record_spend, team=snap, budgets=list(snap.budgets), units=U("0.9"))
        with pytest.raises(BudgetExceeded) as refused:
            arun(
                steps.reserve,
                team=snap,
                budgets=list(snap.budgets),
                request_id="late",
                units=U("0.2"),
            )
        # Retry-After points at the team's midnight, ten minutes away.
        assert 590 <= int(refused.value.headers["Retry-After"]) <= 600
        assert f"({old_month})" in refused.value.message
        assert boundary.astimezone(tz).isoformat() in refused.value.message

    with time_machine.travel(after, tick=True):
        reservation = arun(
            steps.reserve,
            team=snap,
            budgets=list(snap.budgets),
            request_id="early",
            units=U("0.2"),
        )
        arun(steps.settle, reservation=reservation, actual_units=U("0.15"))

        old, new = (
            budget_keys(budget.team_id, budget.id, old_month),
            budget_keys(budget.team_id, budget.id, new_month),
        )
        assert int(redis_sync.get(old.spent)) == U("0.9")
        assert int(redis_sync.get(new.spent)) == U("0.15")
        # Both counters are alive in the store whatever its clock says: the old month's for
        # its grace period, the new month's for the rest of the month and that grace period.
        assert redis_sync.pttl(old.spent) > (SPENT_GRACE_S - 3600) * 1000
        assert redis_sync.pttl(new.spent) > (SPENT_GRACE_S + 27 * 86400) * 1000


def test_counters_written_with_a_clock_days_off_the_stores_survive(redis_sync):
    """A process whose clock is far from the store's (a pinned test, a skewed host) still
    writes counters that the store keeps: lifetimes are spans, never instants. (The embedded
    stand-in reads the process clock, so there both clocks move together.)"""
    team = make_team(timezone="Europe/Paris")
    budget = make_budget(team, daily_limit_usd="1", monthly_limit_usd="10")
    snap = team_snap(team.id)
    for days in (-400, 400):
        skewed = datetime.now(UTC) + timedelta(days=days)
        with time_machine.travel(skewed, tick=True):
            arun(steps.record_spend, team=snap, budgets=list(snap.budgets), units=U("0.6"))
            day = skewed.astimezone(zoneinfo.ZoneInfo("Europe/Paris")).date().isoformat()
            keys = budget_keys(budget.team_id, budget.id, day)
            assert int(redis_sync.get(keys.spent)) == U("0.6")
            assert redis_sync.pttl(keys.spent) > (SPENT_GRACE_S - 3600) * 1000
            assert redis_sync.pttl(keys.alerted) > (SPENT_GRACE_S - 3600) * 1000  # 50 % claimed
