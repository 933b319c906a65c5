"""The one-page monthly report for the people who pay: spend against the baseline, savings by
kind, cache hit rate, each model's share of requests, availability as clients saw it, budget
incidents and cost per feature, for one UTC calendar month.

It is assembled from the selectors the dashboards use (the same definitions, the same
figures), so a number in the report is the number on the page it links to. The page, its
JSON and CSV exports and the monthly e-mail (`send_monthly_reports`) all call `report()`.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter
from dataclasses import dataclass

import redis as redis_sync
from django.core.mail import EmailMultiAlternatives
from django.db.models import Count, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from budgets.digests import recipients
from budgets.keys import MONTHLY_REPORT_CLAIM_TTL_S, monthly_report_claim_key
from budgets.models import BudgetAlert
from gateway.csvexport import csv_writer
from gateway.models import Feature, Team
from gateway.money import units_to_usd
from gateway.pricehistory import PriceHistory
from reports import availability, incidents, month, queries
from reports.filters import EARLIEST_DATE, FilterError, ReportFilters
from reports.models import DailyRollup, Incident, RollupQuerySet
from reports.rollups import floor_hour
from reports.savings import Savings, baseline_label, savings_and_sums, savings_by

MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
BUDGET_KINDS = (
    Incident.Kind.BUDGET_STOP,
    Incident.Kind.SPEND_SPIKE,
    Incident.Kind.IDENTICAL_BURST,
)
NO_FEATURE = "(no feature)"
CSV_COLUMNS = (
    "month",
    "team",
    "feature",
    "requests",
    "cache_hits",
    "spend_usd",
    "baseline_usd",
    "saved_by_routing_usd",
    "saved_by_cache_usd",
    "fallback_extra_usd",
    "saved_total_usd",
    "saved_percent",
    "monthly_budget_usd",
)


@dataclass(frozen=True, slots=True)
class ReportMonth:
    start: dt.datetime  # UTC midnight of the 1st
    end: dt.datetime  # UTC midnight of the next month's 1st (exclusive)

    @property
    def key(self) -> str:
        return self.start.strftime("%Y-%m")

    def complete(self, now: dt.datetime) -> bool:
        return now >= self.end

    def previous(self) -> ReportMonth:
        return month_of(self.start - dt.timedelta(days=1))

    def following(self) -> ReportMonth:
        return month_of(self.end)


def month_of(moment: dt.datetime) -> ReportMonth:
    start, end = month.month_bounds(moment)
    return ReportMonth(start, end)


def parse_month(value: str, now: dt.datetime) -> ReportMonth:
    """`2026-11`; empty means the last complete month. Months after the current one, or
    before the reports' earliest date, are refused."""
    value = value.strip()
    if not value:
        return month_of(now).previous()
    match = MONTH.fullmatch(value)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise FilterError("month", f"month must look like 2026-11; got {value[:20]!r}.")
    year, number = int(match.group(1)), int(match.group(2))
    current = month_of(now)
    earliest = (EARLIEST_DATE.year, EARLIEST_DATE.month)
    if not earliest <= (year, number) <= (current.start.year, current.start.month):
        raise FilterError(
            "month", f"month must be between {EARLIEST_DATE:%Y-%m} and {current.key}; got {value}."
        )
    first = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    return month_of(first)


def report(
    period: ReportMonth,
    team_ids: frozenset[int] | None,
    *,
    team: str = "",
    now: dt.datetime | None = None,
    teams_shown: int | None = None,
) -> dict:
    """Every figure of the monthly report, for the teams given (None: every team). With
    `teams_shown` (a page), the cost-per-feature table holds the teams that spent most, and
    `other` sums the rest; without it (the exports, the e-mail), every team's rows."""
    now = now or timezone.now()
    # The current month runs to the end of this hour; no figure comes from the future.
    end = min(period.end, floor_hour(now) + dt.timedelta(hours=1))
    f = ReportFilters(period.start, end, "custom", team, "", team_ids, None, per_day=True)
    book = PriceHistory.load()
    days = DailyRollup.objects.in_window(f.start, f.end).for_teams(team_ids).order_by()
    found = savings_and_sums(days, (), queries.TOTALS, book=book)
    saved, sums = found.get((), (Savings(), Counter()))
    totals = queries.summarise(sums)
    seen = availability.availability(f, now)
    found = incidents.page(f)["incidents"]
    complete = period.complete(now)
    return {
        "month": period.key,
        "start": period.start.date(),
        "end": (period.end - dt.timedelta(days=1)).date(),
        "complete": complete,
        "through": (end - dt.timedelta(microseconds=1)).date(),
        "team": team,
        "baseline": baseline_label(book, team_ids),
        "totals": totals,
        "savings": saved.as_dict(),
        "models": queries.model_mix(f)["models"],
        "clients": seen["clients"],
        "outages": [
            {
                "provider": o["provider"],
                "start": o["start"],
                "end": o["end"],
                "requests": o["requests"],
                "rescued": o["rescued"],
                "failed": o["failed"],
            }
            for o in seen["outages"]
        ],
        "budget_incidents": [i for i in found if i["kind"] in BUDGET_KINDS],
        "budget_alerts": _alerts(period, team_ids),
        **_features(days, book, now if not complete else None, teams_shown),
        "links": f.querystring,
    }


def _alerts(period: ReportMonth, team_ids: frozenset[int] | None) -> list[dict]:
    """Budget alerts sent in the month, per team and threshold."""
    qs = BudgetAlert.objects.filter(
        created_at__gte=period.start,
        created_at__lt=period.end,
        status=BudgetAlert.Status.SENT,
    )
    if team_ids is not None:
        qs = qs.filter(budget__team_id__in=team_ids)
    rows = (
        qs.values("budget__team__name", "budget__feature__name", "window", "threshold")
        .annotate(alerts=Count("id"))
        .order_by("budget__team__name", "budget__feature__name", "window", "threshold")
    )
    return [
        {
            "team": r["budget__team__name"],
            "feature": r["budget__feature__name"] or "",
            "window": r["window"],
            "threshold": r["threshold"],
            "alerts": r["alerts"],
        }
        for r in rows
    ]


def _features(
    days: RollupQuerySet, book: PriceHistory, now: dt.datetime | None, teams_shown: int | None
) -> dict:
    """`features`: each team, then its features (named team/feature): requests, spend,
    baseline, savings and the monthly budget; for the current month (`now` given), the
    projected month-end. Every team, or the `teams_shown` that spent most with `other`
    summing the rest (None when no team is left out)."""
    other = None
    if teams_shown is not None:
        ranking = month.rank_teams(days, teams_shown)
        if ranking.hidden:
            other = {
                "name": f"{ranking.hidden:,} other teams",
                "teams": ranking.hidden,
                "requests": ranking.hidden_requests,
                "cache_hits": ranking.hidden_hits,
                "spend_usd": units_to_usd(ranking.hidden_cost_units),
            }
        days = days.filter(team_id__in=ranking.shown)
    saved = savings_by(days, ["team_id", "feature_key"], book=book)
    counted: Counter[tuple[int, int]] = Counter()
    hits: Counter[tuple[int, int]] = Counter()
    for r in days.values("team_id", "feature_key").annotate(
        n=Sum("requests"), hits=Sum("cache_hits")
    ):
        counted[(r["team_id"], r["feature_key"])] = r["n"] or 0
        hits[(r["team_id"], r["feature_key"])] = r["hits"] or 0
    per_team: dict[int, list[tuple[int, int]]] = {}
    for key in set(saved) | set(counted):
        per_team.setdefault(key[0], []).append(key)
    teams = dict(Team.objects.filter(id__in=per_team).values_list("id", "name"))
    features = dict(Feature.objects.filter(team_id__in=per_team).values_list("id", "name"))
    limits = month.monthly_limits(set(per_team))
    rows: list[dict] = []
    for team_id in sorted(per_team, key=lambda t: teams.get(t, "")):
        total, team_requests, team_hits = Savings(), 0, 0
        feature_rows = []
        for key in sorted(per_team[team_id], key=lambda k: features.get(k[1], NO_FEATURE)):
            s = saved.get(key, Savings())
            total.add(s)
            team_requests += counted[key]
            team_hits += hits[key]
            name = features.get(key[1], NO_FEATURE)
            feature_rows.append(
                _row(teams[team_id], name, counted[key], hits[key], s, limits.get(key), now)
            )
        limit = limits.get((team_id, 0))
        rows.append(_row(teams[team_id], "", team_requests, team_hits, total, limit, now))
        rows.extend(feature_rows)
    return {"features": rows, "other": other}


def _row(team, feature, requests, hits, s: Savings, limit, now) -> dict:
    figures = s.as_dict()
    row = {
        "team": team,
        "feature": feature,
        "name": f"{team}/{feature}" if feature else team,
        "is_team": not feature,
        "requests": requests,
        "cache_hits": hits,
        **figures,
        "limit_usd": limit,
        "budget_used": round(float(figures["spend_usd"] / limit), 4) if limit else None,
    }
    if now is not None:
        row.update(month.projection(units_to_usd(s.spend), limit, now))
    return row


def write_csv(data: dict, out) -> None:
    """The cost-per-feature table, one row per team/feature, every row naming its team."""
    writer = csv_writer(out)  # cells that would start a formula are escaped
    writer.writerow(CSV_COLUMNS)
    for r in data["features"]:
        if r["is_team"]:
            continue
        whole = r["complete"]  # without a priced baseline, no savings are claimed
        writer.writerow(
            [
                data["month"],
                r["team"],
                r["feature"],
                r["requests"],
                r["cache_hits"],
                r["spend_usd"],
                r["baseline_usd"] if whole else "",
                r["routing_usd"] if whole else "",
                r["cache_usd"] if whole else "",
                r["fallback_extra_usd"],
                r["total_usd"] if whole else "",
                r["percent"] if whole and r["percent"] is not None else "",
                "" if r["limit_usd"] is None else r["limit_usd"],
            ]
        )


def send_monthly_reports(*, redis: redis_sync.Redis, now: dt.datetime | None = None) -> int:
    """E-mail last month's report of each team to its budgets' alert addresses (the
    recipients of the daily digest), as text with the printable page and the CSV attached.

    Teams without recipients or without a request that month get nothing. Each team and
    month is claimed in Redis first, so a retried or duplicated run sends once; a failed send
    gives the claim back and raises (the task retries). Returns how many were sent.
    """
    now = now or timezone.now()
    period = month_of(now).previous()
    sent = 0
    for team in Team.objects.order_by("name"):
        to = recipients(team)
        if not to:
            continue
        data = report(period, frozenset({team.pk}), team=team.name, now=now)
        if not data["totals"]["requests"]:
            continue
        claim = monthly_report_claim_key(team.pk, period.key)
        if not redis.set(claim, 1, nx=True, ex=MONTHLY_REPORT_CLAIM_TTL_S):
            continue
        try:
            context = {"data": data, "email": True}
            mail = EmailMultiAlternatives(
                f"LLM gateway monthly report for {team.name}, {period.key}",
                render_to_string("reports/monthly_email.txt", context),
                None,
                to,
            )
            page = render_to_string("reports/monthly_email.html", context)
            mail.attach_alternative(page, "text/html")
            table = io.StringIO()
            write_csv(data, table)
            mail.attach(f"gateway-{team.name}-{period.key}.csv", table.getvalue(), "text/csv")
            mail.send(fail_silently=False)
        except BaseException:
            redis.delete(claim)
            raise
        sent += 1
    return sent
