"""Budget windows' totals from the roll-ups (what reconciliation and digests read) equal
the ledger's, to the unit, in any time zone: whole days and hours from the roll-ups, the
minutes of a half-hour or quarter-hour zone's midnight from the ledger."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets import spend
from budgets.windows import current_windows, previous_day
from reports.budget_overview import spend_by_team_feature, window_starts
from reports.spend import from_rollups
from tests.reports.conftest import make_record, write_ledger

ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham"]


def scattered_ledger(world, rng: random.Random, n: int, now: dt.datetime) -> None:
    """n records over the last 40 days, every status, whole-minute and odd timestamps."""
    owners = [
        (world["acme"], world["acme_chat"]),
        (world["acme"], world["acme_search"]),
        (world["acme"], None),
        (world["globex"], world["globex_chat"]),
    ]
    records = []
    for _ in range(n):
        team, feature = rng.choice(owners)
        at = now - dt.timedelta(seconds=rng.randrange(40 * 86400))
        records.append(
            make_record(
                team,
                feature,
                created_at=at,
                status=rng.choice(["ok"] * 6 + ["error", "refused", "stream_error", "lost"]),
                cost_usd=Decimal(rng.randrange(10**9)) / 10**10,
            )
        )
    write_ledger(records)


@pytest.mark.parametrize("zone", ZONES)
def test_window_totals_from_the_roll_ups_equal_the_ledgers(world, zone):
    now = timezone.now()
    scattered_ledger(world, random.Random(zone), 600, now)
    windows = [*current_windows(zone, now), previous_day(zone, now)]
    # Whatever the hour: a day that began minutes ago holds no scattered record by chance.
    # Each window's first instant and last one so far hold one of their own.
    edges = {w.start for w in windows} | {
        min(w.end, now) - dt.timedelta(microseconds=1) for w in windows
    }
    write_ledger([make_record(world["acme"], created_at=at, cost_usd="0.01") for at in edges])
    for window in windows:
        rolled = from_rollups(window.start, window.end)
        assert rolled == spend.from_ledger(window.start, window.end), window
        assert rolled  # the ledger has rows in every one of these windows
    only = [world["globex"].pk]
    day = windows[0]
    assert from_rollups(day.start, day.end, only) == spend.from_ledger(day.start, day.end, only)


def test_a_window_inside_one_hour_is_read_from_the_ledger(world):
    now = timezone.now()
    write_ledger([make_record(world["acme"], created_at=now, cost_usd="0.5")])
    start = now - dt.timedelta(minutes=1)
    (totals,) = from_rollups(start, now + dt.timedelta(minutes=1)).values()
    assert (totals.cost_units, totals.served) == (5 * 10**9, 1)


def test_the_budgets_read_the_roll_ups_once_the_reports_app_is_ready():
    assert spend._reader is from_rollups


@pytest.mark.parametrize("zone", ZONES)
def test_the_overviews_budget_windows_are_the_ledgers_from_the_first_whole_hour(world, zone):
    """The overview reads today and this month from the roll-ups (daily rows for whole UTC
    days, hourly ones before them), each window's start rounded up to a whole hour."""
    now = timezone.now()
    scattered_ledger(world, random.Random(zone), 600, now)
    world["acme"].timezone = zone
    world["acme"].save()
    teams = [(world["acme"].pk, zone), (world["globex"].pk, "UTC")]
    got = spend_by_team_feature(teams, now)
    expected: dict = {}
    for team_id, tz_name in teams:
        day_start, month_start = window_starts(tz_name, now)
        later = now + dt.timedelta(days=1)
        today = spend.from_ledger(_ceil_hour(day_start), later, [team_id])
        for key, month in spend.from_ledger(_ceil_hour(month_start), later, [team_id]).items():
            expected[key] = (today[key].cost_units if key in today else 0, month.cost_units)
    assert {k: v for k, v in got.items() if v != (0, 0)} == {
        k: v for k, v in expected.items() if v != (0, 0)
    }
    assert any(month for _, month in got.values())


def _ceil_hour(moment: dt.datetime) -> dt.datetime:
    floored = moment.replace(minute=0, second=0, microsecond=0)
    return floored if floored == moment else floored + dt.timedelta(hours=1)
