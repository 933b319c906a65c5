"""Today's and this month's spend per team and feature, against their budgets.

Budget windows start at midnight in the team's time zone. Rollups are per UTC hour, so a
zone with a half-hour offset has its window start rounded up to the next whole hour here;
the hard limits themselves are enforced exactly by the gateway, not by this page.
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
from gateway.money import units_to_usd
from gateway.runtime import sync_redis
from reports.filters import ReportFilters
from reports.models import HourlyRollup

log = logging.getLogger(__name__)

Spend = dict[tuple[int, int], tuple[int, int]]  # (team, feature key) -> (today, month) units


def window_starts(tz_name: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """UTC instants of local midnight today and of the first of this month."""
    local = now.astimezone(zoneinfo.ZoneInfo(tz_name))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.astimezone(dt.UTC), day.replace(day=1).astimezone(dt.UTC)


def spend_by_team_feature(teams: list[Team], now: dt.datetime) -> Spend:
    """One aggregate query per distinct team time zone."""
    by_zone: dict[str, list[int]] = defaultdict(list)
    for team in teams:
        by_zone[team.timezone].append(team.id)
    spend: Spend = {}
    for tz_name, team_ids in by_zone.items():
        day_start, month_start = window_starts(tz_name, now)
        rows = (
            HourlyRollup.objects.filter(team_id__in=team_ids, hour__gte=month_start)
            .order_by()
            .values("team_id", "feature_key")
            .annotate(
                today=Sum("cost_units", filter=Q(hour__gte=day_start)), month=Sum("cost_units")
            )
        )
        for row in rows:
            spend[(row["team_id"], row["feature_key"])] = (row["today"] or 0, row["month"] or 0)
    return spend


def reserved_now(budgets: list[Budget]) -> dict[int, tuple[int | None, int | None]]:
    """What requests in flight hold on each budget today and this month (live, from Redis's
    counters; None when Redis cannot be read). One MGET for the page."""
    keys = []
    for b in budgets:
        keys += [budget_keys(b.pk, w.key).reserved for w in current_windows(b.team.timezone)]
    if not keys:
        return {}
    try:
        values = sync_redis().mget(keys)
    except (RedisError, OSError) as exc:
        log.warning("reserved amounts unavailable: %s", exc)
        return {b.pk: (None, None) for b in budgets}
    units = [int(v or 0) for v in values]
    return {b.pk: (units[2 * i], units[2 * i + 1]) for i, b in enumerate(budgets)}


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
    teams = list(
        Team.objects.all() if f.team_ids is None else Team.objects.filter(id__in=f.team_ids)
    )
    spend = spend_by_team_feature(teams, timezone.now())
    picked = [(k, v) for k, v in spend.items() if f.feature_keys is None or k[1] in f.feature_keys]
    budgets = []
    rows = list(
        Budget.objects.filter(enabled=True, team__in=teams).select_related("team", "feature")
    )
    reserved = reserved_now(rows)
    for budget in rows:
        held = reserved.get(budget.id, (0, 0))
        keys = [k for k in spend if k[0] == budget.team_id]
        if budget.feature_id:
            keys = [k for k in keys if k[1] == budget.feature_id]
        today = sum(spend[k][0] for k in keys)
        month = sum(spend[k][1] for k in keys)
        budgets.append(
            {
                "id": budget.id,
                "team": budget.team.name,
                "feature": budget.feature.name if budget.feature_id else "",
                "hard": budget.hard,
                "daily": _window(today, budget.daily_limit_usd, budget.alert_thresholds, held[0]),
                "monthly": _window(
                    month, budget.monthly_limit_usd, budget.alert_thresholds, held[1]
                ),
            }
        )
    return {
        "spend_today_usd": units_to_usd(sum(v[0] for _, v in picked)),
        "spend_month_usd": units_to_usd(sum(v[1] for _, v in picked)),
        "budgets": budgets,
    }
