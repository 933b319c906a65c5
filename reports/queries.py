"""Selectors behind every report page and its JSON twin. They read hourly rollups (and
budgets), never the ledger, so a page costs a few aggregate queries whatever the traffic.

Money leaves here as exact Decimal USD (JSON: strings); rates and latencies are floats.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from decimal import Decimal

from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from gateway.models import Feature, Team
from gateway.money import units_to_usd
from gateway.pricehistory import PriceHistory
from reports import month
from reports.budget_overview import budget_overview
from reports.filters import ReportFilters
from reports.models import DailyRollup, HourlyRollup, Rollup
from reports.savings import (
    Savings,
    baseline_label,
    savings_and_sums,
    total_savings,
)

TOTALS = (
    "requests",
    "cache_hits",
    "errors",
    "refused",
    "stream_errors",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cost_units",
    "unpriced",
    "estimated",
)
DIMENSIONS = {"team": "team_id", "feature": "feature_key", "model": "served_model"}
PLURALS = {"team": "teams", "feature": "features", "model": "models"}
# Series of the spend chart and columns of its table; the others are summed in one.
SERIES_SHOWN = 12
NO_FEATURE = "(no feature)"
NOT_SERVED = "(not served)"


def rollups(f: ReportFilters) -> QuerySet[Rollup]:
    """Hourly rows for ranges shown per hour, daily rows (24× fewer) for ranges of days."""
    model = HourlyRollup if f.hourly else DailyRollup
    return (
        model.objects.in_window(f.start, f.end)
        .for_teams(f.team_ids)
        .for_features(f.feature_keys)
        .for_endpoint(f.endpoint)
        .order_by()
    )


def usd(units: int | None) -> Decimal:
    return units_to_usd(int(units or 0))


def rate(part: int | None, whole: int | None) -> float | None:
    return round((part or 0) / whole, 4) if whole else None


def bucket_starts(f: ReportFilters) -> list[dt.datetime]:
    step = dt.timedelta(hours=1) if f.hourly else dt.timedelta(days=1)
    first = f.start if f.hourly else f.start.replace(hour=0)
    return [first + step * i for i in range(math.ceil((f.end - first) / step))]


def bucket_label(moment: dt.datetime, f: ReportFilters) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if f.hourly else "%Y-%m-%d")


def by_bucket(qs: QuerySet, f: ReportFilters) -> QuerySet:
    return qs.annotate(bucket=F(qs.model.PERIOD_FIELD))


def normalise(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def dimension_names(by: str) -> dict:
    if by == "team":
        return dict(Team.objects.values_list("id", "name"))
    if by == "feature":  # always team/feature: two teams' "search" are two features
        return {0: NO_FEATURE, **feature_names()}
    return {}


def feature_names() -> dict[int, str]:
    return {
        pk: f"{team}/{name}"
        for pk, team, name in Feature.objects.values_list("id", "team__name", "name")
    }


def summarise(totals: dict) -> dict:
    requests = totals.get("requests") or 0
    failures = (totals.get("errors") or 0) + (totals.get("stream_errors") or 0)
    hits, refused = totals.get("cache_hits") or 0, totals.get("refused") or 0
    return {
        # One meaning on every page (templates/reports/_definitions.html): requests =
        # served + cache hits + refused + failed.
        "requests": requests,
        "served": requests - hits - refused - failures,
        "failed": failures,
        "cache_hits": hits,
        "cache_hit_rate": rate(totals.get("cache_hits"), requests),
        "error_rate": rate(failures, requests),
        "fallback_rate": rate(totals.get("fallbacks"), requests),
        "refused": totals.get("refused") or 0,
        "input_tokens": totals.get("input_tokens") or 0,
        "output_tokens": totals.get("output_tokens") or 0,
        "spend_usd": usd(totals.get("cost_units")),
        "unpriced": totals.get("unpriced") or 0,
        "estimated": totals.get("estimated") or 0,
    }


def overview(f: ReportFilters) -> dict:
    """Totals over the range, spend and savings per bucket, this month's headline, and
    today's and this month's spend vs budgets."""
    book = PriceHistory.load()
    # One read of the range's rows: savings, totals and spend per bucket.
    per = savings_and_sums(rollups(f), ["bucket"], TOTALS, book=book)
    totals: Counter[str] = Counter()
    for _, sums in per.values():
        totals.update(sums)
    per_bucket = {normalise(k[0]): sums["cost_units"] for k, (_, sums) in per.items()}
    saved = {normalise(k[0]): s for k, (s, _) in per.items()}
    starts = bucket_starts(f)
    in_range = Savings()
    for s in saved.values():
        in_range.add(s)
    return {
        "totals": summarise(totals),
        "savings": in_range.as_dict(),
        "month": month_headline(f, book),
        "month_table": month.month_table(f, book=book),
        "baseline": baseline_label(book, f.team_ids),
        "labels": [bucket_label(b, f) for b in starts],
        "spend_usd": [usd(per_bucket.get(b)) for b in starts],
        "saved_by_cache_usd": [usd(saved[b].baseline_hits if b in saved else 0) for b in starts],
        "saved_by_routing_usd": [usd(saved[b].routing if b in saved else 0) for b in starts],
        **budget_overview(f),
    }


def month_headline(f: ReportFilters, book: PriceHistory) -> dict:
    """This calendar month (UTC) so far, for the teams and features picked."""
    start, end = month.month_bounds(timezone.now())
    qs = DailyRollup.objects.in_window(start, end).for_teams(f.team_ids)
    return {"start": start, **total_savings(qs.for_features(f.feature_keys), book=book).as_dict()}


def spend(f: ReportFilters, *, by: str) -> dict:
    """Spend per bucket stacked by team, feature or served model: the SERIES_SHOWN that
    cost most, and one series summing the others (the CSV, `spend_rows`, has every one).
    Two reads of the range's rows, however many teams and features."""
    column = DIMENSIONS[by]
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    ranked = sorted(
        rollups(f).values(column).annotate(cost=Sum("cost_units")).values_list(column, "cost"),
        key=lambda pair: (-(pair[1] or 0), str(pair[0])),
    )
    shown = (
        [key for key, _ in ranked[:SERIES_SHOWN]]
        if len(ranked) > SERIES_SHOWN + 1
        else [key for key, _ in ranked]
    )
    hidden = len(ranked) - len(shown)
    per_series = {
        f"k{i}": Sum("cost_units", filter=Q(**{column: key})) for i, key in enumerate(shown)
    }
    cost: dict[object, list[int]] = {key: [0] * len(starts) for key in shown}
    other = [0] * len(starts)
    for row in (
        by_bucket(rollups(f), f).values("bucket").annotate(total=Sum("cost_units"), **per_series)
    ):
        i = index.get(normalise(row["bucket"]))
        if i is None:
            continue
        counted = 0
        for j, key in enumerate(shown):
            cost[key][i] += row[f"k{j}"] or 0
            counted += row[f"k{j}"] or 0
        other[i] += (row["total"] or 0) - counted
    names = series_names(by, shown)
    series = sorted(
        ((names.get(key, key) or NOT_SERVED, units) for key, units in cost.items()),
        key=lambda pair: (-sum(pair[1]), pair[0]),
    )
    if hidden:
        series.append((f"{hidden:,} other {PLURALS[by]}", other))
    return {
        "by": by,
        "labels": [bucket_label(b, f) for b in starts],
        "series": [
            {"name": n, "cost_usd": [usd(u) for u in units], "total_usd": usd(sum(units))}
            for n, units in series
        ],
        "other_series": hidden,
        "pivot": [
            {
                "bucket": label,
                "values": [usd(units[i]) for _, units in series],
                "total_usd": usd(sum(units[i] for _, units in series)),
            }
            for i, label in enumerate(bucket_label(b, f) for b in starts)
        ],
        "total_usd": usd(sum(sum(units) for _, units in series)),
    }


def series_names(by: str, keys: list) -> dict:
    """The names of the series `keys` (team ids, feature keys; models are their own)."""
    if by == "team":
        return dict(Team.objects.filter(id__in=keys).values_list("id", "name"))
    if by == "feature":
        named = Feature.objects.filter(id__in=keys).values_list("id", "team__name", "name")
        return {0: NO_FEATURE, **{pk: f"{team}/{name}" for pk, team, name in named}}
    return {}


def spend_rows(f: ReportFilters, *, by: str) -> list[dict]:
    """The spend table behind the chart, every bucket, team and team/feature or model: the
    CSV export."""
    column = DIMENSIONS[by]
    names = dimension_names(by)
    teams = dimension_names("team")
    starts = bucket_starts(f)
    index = {b: i for i, b in enumerate(starts)}
    table: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    query = (
        by_bucket(rollups(f), f)
        .values(*dict.fromkeys(["bucket", "team_id", column]))
        .annotate(
            requests=Sum("requests"),
            cost=Sum("cost_units"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
    )
    for row in query:
        i = index.get(normalise(row["bucket"]))
        if i is None:
            continue
        name = names.get(row[column], row[column]) or NOT_SERVED
        cell = table[(i, teams.get(row["team_id"], ""), name)]
        for j, field in enumerate(("requests", "cost", "input_tokens", "output_tokens")):
            cell[j] += row[field] or 0
    return [
        {
            "bucket": bucket_label(starts[i], f),
            "team": team,
            "name": name,
            "requests": c[0],
            "cost_usd": usd(c[1]),
            "input_tokens": c[2],
            "output_tokens": c[3],
        }
        for (i, team, name), c in sorted(table.items())
    ]


def model_mix(f: ReportFilters) -> dict:
    """Share of requests and of spend per served model (one read of the rows)."""
    summed = ("requests", "cache_hits", "cost_units", "input_tokens", "output_tokens")
    per = savings_and_sums(rollups(f).exclude(served_model=""), ["served_model"], summed)
    rows = sorted(
        (
            {"served_model": key[0], **sums, "cost": sums["cost_units"]}
            for key, (_, sums) in per.items()
        ),
        key=lambda r: (-r["requests"], r["served_model"]),
    )
    saved = {key: s for key, (s, _) in per.items()}
    total_requests = sum(r["requests"] or 0 for r in rows)
    total_cost = sum(r["cost"] or 0 for r in rows)
    return {
        "models": [
            {
                "model": r["served_model"],
                "requests": r["requests"],
                "cache_hits": r["cache_hits"],
                "request_share": rate(r["requests"], total_requests),
                "saved_by_routing_usd": usd(saved[(r["served_model"],)].routing),
                "saved_by_cache_usd": usd(saved[(r["served_model"],)].baseline_hits),
                "cost_usd": usd(r["cost"]),
                "cost_share": rate(r["cost"], total_cost),
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
            }
            for r in rows
        ],
        "total_requests": total_requests,
        "total_usd": usd(total_cost),
    }
