"""This month so far, per team and per team/feature: spend, baseline, savings, the month-end
projected at the current run rate, and the monthly budget it may cross.

Months are UTC calendar months (the rollups are per UTC day); budgets themselves are
enforced in each team's time zone by the gateway, not here.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from django.db.models import Q, Sum
from django.utils import timezone

from budgets.models import Budget
from gateway.models import Feature, Team
from gateway.money import QUANTUM, units_to_usd
from gateway.pricehistory import PriceHistory
from reports.filters import ReportFilters
from reports.models import DailyRollup, RollupQuerySet
from reports.savings import Savings, savings_by, total_savings


def month_bounds(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC month containing `now`: [first day 00:00, first day of next month 00:00)."""
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + dt.timedelta(days=days)


def projection(spend: Decimal, limit: Decimal | None, now: dt.datetime) -> dict:
    """Month-end spend at the run rate so far (today counted as a whole day), and the day of
    the month the monthly limit is crossed at that rate (None when it is not)."""
    start, end = month_bounds(now)
    days, elapsed = (end - start).days, now.astimezone(dt.UTC).day
    daily = spend / elapsed
    projected = (daily * days).quantize(QUANTUM, rounding=ROUND_HALF_UP)
    crosses = None
    if limit is not None and projected > limit:
        if spend >= limit:
            crosses = elapsed if spend else None
        elif daily:
            crosses = int((limit / daily).to_integral_value(rounding=ROUND_CEILING))
            crosses = max(min(crosses, days), elapsed)
    return {
        "projected_usd": projected,
        "limit_usd": limit,
        "over": limit is not None and projected > limit,
        "crosses_on": start.date().replace(day=crosses) if crosses else None,
    }


def monthly_limits(team_ids: set[int]) -> dict[tuple[int, int], Decimal]:
    """Monthly limits by (team, feature id or 0 for the team's own budget); several budgets
    on one target: the smallest limit binds."""
    out: dict[tuple[int, int], Decimal] = {}
    budgets = Budget.objects.filter(enabled=True, team_id__in=team_ids).filter(
        ~Q(monthly_limit_usd=None)
    )
    for b in budgets.values("team_id", "feature_id", "monthly_limit_usd"):
        key = (b["team_id"], b["feature_id"] or 0)
        limit = b["monthly_limit_usd"]
        out[key] = min(limit, out.get(key, limit))
    return out


# Teams shown row by row in a table of teams and features; the rest are summed in one row
# (the CSV exports have every one). 5,000 teams made a 16 MB overview.
TABLE_TEAMS = 50


def month_table(f: ReportFilters, *, book: PriceHistory | None = None) -> dict:
    """Rows per team, each followed by its features (named team/feature): the TABLE_TEAMS
    teams that spent most, in name order, then one row summing the others. Only the teams
    shown are priced feature by feature; the others are summed in SQL."""
    now = timezone.now()
    start, end = month_bounds(now)
    qs = DailyRollup.objects.in_window(start, end).for_teams(f.team_ids)
    qs = qs.for_features(f.feature_keys)
    ranking = rank_teams(qs, TABLE_TEAMS)
    teams, hidden = ranking.shown, ranking.hidden
    per_team: dict[int, list[tuple[int, Savings]]] = {}
    shown = qs.filter(team_id__in=teams)
    for (team_id, key), s in savings_by(shown, ["team_id", "feature_key"], book=book).items():
        per_team.setdefault(team_id, []).append((key, s))
    features = dict(Feature.objects.filter(team_id__in=teams).values_list("id", "name"))
    limits = monthly_limits(set(teams))
    rows = []
    for team_id in sorted(teams, key=teams.get):
        team_total = Savings()
        feature_rows = []
        found = sorted(per_team.get(team_id, []), key=lambda kv: features.get(kv[0], ""))
        for key, s in found:
            team_total.add(s)
            name = f"{teams[team_id]}/{features.get(key, '(no feature)')}"
            feature_rows.append(_row(name, s, limits.get((team_id, key)), now, team=False))
        rows.append(_row(teams[team_id], team_total, limits.get((team_id, 0)), now, team=True))
        rows.extend(feature_rows)
    if hidden:
        others = total_savings(qs.exclude(team_id__in=teams), book=book)
        rows.append(_row(f"{hidden:,} other teams", others, None, now, team=True))
    return {
        "start": start.date(),
        "end": (end - dt.timedelta(days=1)).date(),
        "rows": rows,
        "other_teams": hidden,
    }


@dataclass(frozen=True, slots=True)
class Ranking:
    """The teams of a table: the `shown` that spent most (id: name, ties in name order),
    how many are `hidden`, and the hidden ones' requests, cache hits and cost summed."""

    shown: dict[int, str]
    hidden: int
    hidden_requests: int
    hidden_hits: int
    hidden_cost_units: int


def rank_teams(qs: RollupQuerySet, n: int) -> Ranking:
    """Rank the teams of `qs` by spend: one grouped query, a row per team (and the names)."""
    names = dict(Team.objects.values_list("id", "name"))
    rows = sorted(
        qs.order_by()
        .values("team_id")
        .annotate(spent=Sum("cost_units"), requests=Sum("requests"), hits=Sum("cache_hits")),
        key=lambda r: (-(r["spent"] or 0), names.get(r["team_id"], "")),
    )
    left = rows[n:]
    return Ranking(
        shown={r["team_id"]: names.get(r["team_id"], "") for r in rows[:n]},
        hidden=len(left),
        hidden_requests=sum(r["requests"] or 0 for r in left),
        hidden_hits=sum(r["hits"] or 0 for r in left),
        hidden_cost_units=sum(r["spent"] or 0 for r in left),
    )


def _row(name: str, s: Savings, limit: Decimal | None, now: dt.datetime, *, team: bool) -> dict:
    figures = s.as_dict()
    return {
        "name": name,
        "is_team": team,
        **figures,
        **projection(units_to_usd(s.spend), limit, now),
    }
