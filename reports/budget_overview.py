"""Today's and this month's spend per team and feature, against their budgets.

Budget windows start at midnight in the team's time zone. They are read from the roll-ups
(whole UTC days from the daily ones, today's so far included; the hours before a window's
first whole UTC day from the hourly ones), so a zone with a half-hour offset has its window
start rounded up to the next whole hour here; the hard limits themselves are enforced
exactly by the gateway, not by this page.

The page lists the TABLE_BUDGETS budgets nearest their limits (of thousands, the ones to
look at) and counts the rest; a team's or feature's filter shows its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections import defaultdict
from decimal import Decimal

from django.db.models import Q, Sum
from django.utils import timezone
from redis.exceptions import RedisError

from budgets.keys import budget_keys
from budgets.models import Budget
from budgets.windows import current_windows
from gateway.models import Team
from gateway.money import UNITS_PER_USD, units_to_usd
from gateway.runtime import read_many
from reports.filters import ReportFilters
from reports.models import DailyRollup, HourlyRollup, Rollup
from reports.rollups import floor_day, floor_hour

log = logging.getLogger(__name__)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
TABLE_BUDGETS = 50  # budgets listed, nearest their limits first; the rest are counted
BUDGET_FIELDS = (
    "id",
    "team_id",
    "team__name",
    "team__timezone",
    "feature_id",
    "feature__name",
    "hard",
    "daily_limit_usd",
    "monthly_limit_usd",
    "alert_thresholds",
)

Spend = dict[tuple[int, int], tuple[int, int]]  # (team, feature key) -> (today, month) units


def window_starts(tz_name: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """UTC instants of local midnight today and of the first of this month."""
    local = now.astimezone(zoneinfo.ZoneInfo(tz_name))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.astimezone(dt.UTC), day.replace(day=1).astimezone(dt.UTC)


def spend_by_team_feature(
    teams: list[tuple[int, str]], now: dt.datetime, *, every: bool = False
) -> Spend:
    """Per team and feature key, today's and this month's spend in each team's time zone
    (`teams`: (id, time zone) pairs): one daily and, for a zone whose midnight is not a UTC
    midnight, one hourly grouped query per distinct time zone (`every`: `teams` are all the
    teams, so a zone that holds them all is read without a list of ids)."""
    by_zone: dict[str, list[int]] = defaultdict(list)
    for team_id, tz_name in teams:
        by_zone[tz_name].append(team_id)
    spend: Spend = {}
    for tz_name, team_ids in by_zone.items():
        day_start, month_start = (_ceil(t, floor_hour, HOUR) for t in window_starts(tz_name, now))
        ids = None if every and len(by_zone) == 1 else team_ids
        for key, today, month in _window_sums(day_start, month_start, now, ids):
            before = spend.get(key, (0, 0))
            spend[key] = (before[0] + today, before[1] + month)
    return spend


def _window_sums(day_start: dt.datetime, month_start: dt.datetime, now: dt.datetime, ids):
    """(team, feature key, today's units, this month's units) from the roll-ups: the whole
    UTC days of each window from the daily ones (today's included: it holds what was drained
    so far, so a UTC day is one row per feature, not one per hour), the hours before its
    first whole day from the hourly ones."""
    end = floor_day(now) + DAY
    first_day, today_first_day = (
        _ceil(month_start, floor_day, DAY),
        _ceil(day_start, floor_day, DAY),
    )
    # (roll-ups, rows read, today's among them, the month's among them: None for all)
    spans: list[tuple[type[Rollup], Q, Q, Q | None]] = [
        (DailyRollup, Q(day__gte=first_day, day__lt=end), Q(day__gte=today_first_day), None)
    ]
    month_hours = Q(hour__gte=month_start, hour__lt=first_day)
    today_hours = Q(hour__gte=day_start, hour__lt=today_first_day)
    if month_start < first_day or day_start < today_first_day:
        spans.append((HourlyRollup, month_hours | today_hours, today_hours, month_hours))
    for model, where, today, month in spans:
        rows = model.objects.filter(where)
        if ids is not None:
            rows = rows.filter(team_id__in=ids)
        yield from (
            ((team_id, feature_key), today_units or 0, month_units or 0)
            for team_id, feature_key, today_units, month_units in rows.order_by()
            .values("team_id", "feature_key")
            .annotate(
                today=Sum("cost_units", filter=today),
                month=Sum("cost_units", filter=month),
            )
            .values_list("team_id", "feature_key", "today", "month")
        )


def _ceil(moment: dt.datetime, floor, step: dt.timedelta) -> dt.datetime:
    floored = floor(moment)
    return floored if floored == moment else floored + step


def reserved_now(
    budgets: list[tuple[int, int, str]],
) -> dict[int, tuple[int | None, int | None]]:
    """What requests in flight hold on each budget ((id, team id, the team's time zone)) today
    and this month (live, from Redis's counters; None when Redis cannot be read). One MGET
    for the budgets listed."""
    keys = []
    for pk, team_id, tz_name in budgets:
        keys += [budget_keys(team_id, pk, w.key).reserved for w in current_windows(tz_name)]
    if not keys:
        return {}
    try:
        values = read_many(keys)
    except (RedisError, OSError) as exc:
        log.warning("reserved amounts unavailable: %s", exc)
        return {pk: (None, None) for pk, *_ in budgets}
    units = [int(v or 0) for v in values]
    return {pk: (units[2 * i], units[2 * i + 1]) for i, (pk, *_) in enumerate(budgets)}


def _window(
    spent_units: int, limit: Decimal | None, thresholds: list[int], reserved: int | None = 0
) -> dict | None:
    if limit is None:
        return None
    spent = units_to_usd(spent_units)
    percent = float(spent / limit * 100) if limit else (100.0 if spent else 0.0)
    return {
        "reserved_usd": None if reserved is None else units_to_usd(reserved),
        "spend_usd": spent,
        "limit_usd": limit,
        "percent": round(percent, 1),
        "thresholds": sorted(thresholds),
        "crossed": [t for t in sorted(thresholds) if percent >= t],
    }


def budget_overview(f: ReportFilters) -> dict:
    teams = Team.objects.all() if f.team_ids is None else Team.objects.filter(id__in=f.team_ids)
    every = f.team_ids is None
    spend = spend_by_team_feature(
        list(teams.values_list("id", "timezone")), timezone.now(), every=every
    )
    picked = [(k, v) for k, v in spend.items() if f.feature_keys is None or k[1] in f.feature_keys]
    per_team: dict[int, tuple[int, int]] = {}
    for (team_id, _), (today, month) in spend.items():
        before = per_team.get(team_id, (0, 0))
        per_team[team_id] = (before[0] + today, before[1] + month)
    enabled = Budget.objects.filter(enabled=True)
    if not every:
        enabled = enabled.filter(team_id__in=f.team_ids)
    # Rank every budget by how near its limit it is, then describe only those listed.
    ranked = []
    rows = enabled.order_by().values_list(
        "id", "team_id", "feature_id", "daily_limit_usd", "monthly_limit_usd", "team__name",
        "feature__name",
    )  # fmt: skip
    for pk, team_id, feature_id, daily, monthly, team, feature in rows:
        today, month = (
            spend.get((team_id, feature_id), (0, 0))
            if feature_id
            else per_team.get(team_id, (0, 0))
        )
        used = max(_percent(today, daily), _percent(month, monthly))
        ranked.append((-used, team, feature or "", pk, today, month))
    ranked.sort()
    shown = ranked[:TABLE_BUDGETS]
    spent = {pk: (today, month) for *_, pk, today, month in shown}
    listed = {b["id"]: b for b in Budget.objects.filter(id__in=spent).values(*BUDGET_FIELDS)}
    reserved = reserved_now(
        [(pk, listed[pk]["team_id"], listed[pk]["team__timezone"]) for pk in spent]
    )
    budgets = []
    for pk, (today, month) in spent.items():
        b, held = listed[pk], reserved.get(pk, (0, 0))
        thresholds = b["alert_thresholds"]
        budgets.append(
            {
                "id": pk,
                "team": b["team__name"],
                "feature": b["feature__name"] or "",
                "hard": b["hard"],
                "daily": _window(today, b["daily_limit_usd"], thresholds, held[0]),
                "monthly": _window(month, b["monthly_limit_usd"], thresholds, held[1]),
            }
        )
    return {
        "spend_today_usd": units_to_usd(sum(v[0] for _, v in picked)),
        "spend_month_usd": units_to_usd(sum(v[1] for _, v in picked)),
        "budgets": budgets,
        "budgets_hidden": len(ranked) - len(shown),
    }


def _percent(units: int, limit: Decimal | None) -> float:
    """How much of a window's limit is spent, in percent, to rank budgets by (a window
    without a limit: 0). The figures shown are `_window`'s, in Decimal."""
    if limit is None:
        return 0.0
    if not limit:
        return 100.0 if units else 0.0
    return units * 100 / (float(limit) * UNITS_PER_USD)
