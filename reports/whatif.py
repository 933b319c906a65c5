"""What-if: replay past ledger traffic under a candidate policy (routing rules, prices, a
baseline) and say what it would have cost, per team/feature and per model.

The ledger is read once, aggregated in SQL per (day, team, feature, requested model, served
model, cache hit, and whether the prompt fits each size limit the candidate's rules name):
a few thousand groups for a million rows. Each group is priced in Python with
gateway.money, exactly, at the price valid on its day (gateway/pricehistory.py) unless the
candidate gives its own.

Assumptions, stated on the page and by the command (CAVEATS):
- The ledger does not record a request's priority: a request of a feature the candidate
  lists under `priorities` has that priority, every other "medium".
- A rule's `max_output_tokens` is checked against the output the request produced (the
  ledger does not keep the max_tokens it sent).
- Each replayed request is served by its rule's first model: no outage is replayed.
- Cached answers are assumed cached again (they cost nothing under the candidate too);
  refused requests stay refused.
- Tokenizers differ between providers: tokens moved from one provider's model to another's
  are scaled by `token_ratios` (tokens per provider relative to one another; 1 when unset).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Case, Count, IntegerField, Sum, Value, When
from django.db.models.functions import TruncDay

from gateway.models import Feature, LanguageModel, Team, UsageRecord
from gateway.money import cost_of, units_to_usd
from gateway.pricehistory import PriceHistory
from gateway.providers.base import Usage
from reports.candidate import Candidate, Rule
from reports.models import DailyRollup, HourlyRollup

AUTO = frozenset({"", "auto"})
CAVEATS = (
    "The ledger does not record priority: features listed under `priorities` take theirs, "
    "every other request is replayed as medium priority.",
    "A rule's max_output_tokens is checked against the output each request produced.",
    "Each request is served by its rule's first model: no outage or fallback is replayed.",
    "Cached answers are assumed cached again (free under the candidate too); refused "
    "requests stay refused.",
    "Tokenizers differ between providers: tokens moved to another provider's model are "
    "scaled by the candidate's token_ratios (1 when unset), so cross-provider figures are "
    "estimates.",
)


def _thresholds(rules: list[Rule], attr: str) -> list[int]:
    return sorted({getattr(r, attr) for r in rules if getattr(r, attr) is not None})


def ledger_groups(start: dt.datetime, end: dt.datetime, team_ids, candidate: Candidate):
    """The ledger in [start, end), summed per group (one SQL query)."""
    prompt_limits = _thresholds(candidate.rules, "max_prompt_tokens")
    output_limits = _thresholds(candidate.rules, "max_output_tokens")
    fits = {
        **{f"p{t}": _fits("input_tokens", t) for t in prompt_limits},
        **{f"o{t}": _fits("output_tokens", t) for t in output_limits},
    }
    qs = UsageRecord.objects.between(start, end).exclude(status=UsageRecord.Status.REFUSED)
    if team_ids is not None:
        qs = qs.filter(team_id__in=team_ids)
    hit = Case(When(cache=UsageRecord.Cache.HIT, then=Value(1)), default=Value(0))
    rows = (
        qs.order_by()
        .annotate(day=TruncDay("created_at", tzinfo=dt.UTC), hit=hit, **fits)
        .values(
            "day",
            "team_id",
            "feature_id",
            "requested_model",
            "served_model",
            "hit",
            "unpriced",
            *fits,
        )
        .annotate(
            n=Count("id"),
            tin=Sum("input_tokens"),
            tout=Sum("output_tokens"),
            tcached=Sum("cached_tokens"),
            twrite=Sum("cache_write_tokens"),
        )
    )
    return rows, prompt_limits, output_limits


def _fits(column: str, limit: int) -> Case:
    return Case(
        When(**{f"{column}__lte": limit}, then=Value(1)),
        default=Value(0),
        output_field=IntegerField(),
    )


@dataclass
class Tally:
    requests: int = 0
    actual: int = 0  # units
    candidate: int = 0
    baseline: int = 0
    unpriced: int = 0  # requests the candidate cannot price
    no_baseline: int = 0  # requests without a baseline, or on a baseline model without a price


def replay(
    *,
    start: dt.datetime,
    end: dt.datetime,
    team_ids,
    candidate: Candidate,
    book: PriceHistory | None = None,
) -> dict:
    """What the ledger's traffic in [start, end) costs under `candidate`."""
    book = book or PriceHistory.load()
    rows, prompt_limits, output_limits = ledger_groups(start, end, team_ids, candidate)
    providers = dict(LanguageModel.objects.values_list("name", "provider__name"))
    kinds = dict(LanguageModel.objects.values_list("name", "provider__kind"))
    teams = dict(Team.objects.values_list("id", "name"))
    features = dict(Feature.objects.values_list("id", "name"))
    per_feature: dict[tuple[str, str], Tally] = defaultdict(Tally)
    shares: dict[str, int] = defaultdict(int)
    for row in rows:
        team = teams.get(row["team_id"], "?")
        feature = features.get(row["feature_id"], "(no feature)")
        tally = per_feature[(team, feature)]
        tally.requests += row["n"]
        if row["hit"]:
            shares["(cache hit)"] += row["n"]
            source = row["served_model"]
            target = None
        else:
            source = row["served_model"] or row["requested_model"]
            target = _target(
                row, candidate, f"{team}/{feature}", team, prompt_limits, output_limits
            )
            shares[target or "(no model)"] += row["n"]
        if row["unpriced"] and not row["hit"]:
            tally.unpriced += row["n"]  # cost unknown: left out of every figure, as elsewhere
            continue
        day = row["day"].astimezone(dt.UTC).date()
        usage = Usage(row["tin"] or 0, row["tout"] or 0, row["tcached"] or 0, row["twrite"] or 0)
        ratio = _ratio_of(candidate, providers, kinds)
        if target is not None and usage.input_tokens + usage.output_tokens:
            prices = candidate.prices.get(target) or book.prices(target, day)
            if prices is None or not prices.known:
                tally.unpriced += row["n"]
            else:
                moved = _scale(usage, ratio(target) / ratio(source))
                tally.candidate += cost_of(moved, prices).units
        baseline = candidate.baseline or book.baseline(row["team_id"])
        if source and not (row["hit"] and baseline is not None and baseline.cache):
            prices = None
            if baseline is not None:
                prices = candidate.prices.get(baseline.model) or book.prices(baseline.model, day)
            if prices is None or not prices.known:
                # Never $0: the baseline figures of this row and the total are not shown.
                tally.no_baseline += row["n"]
            else:
                moved = _scale(usage, ratio(baseline.model) / ratio(source))
                tally.baseline += cost_of(moved, prices).units
    # What was spent: the rollups' exact sums over the same hours and days.
    model = HourlyRollup if end - start <= dt.timedelta(days=2) else DailyRollup
    spent = model.objects.in_window(start, end).for_teams(team_ids).order_by()
    for r in spent.values("team_id", "feature_key").annotate(units=Sum("cost_units")):
        key = (teams.get(r["team_id"], "?"), features.get(r["feature_key"], "(no feature)"))
        per_feature[key].actual += r["units"] or 0
    return _result(per_feature, shares, start, end, candidate)


def _target(row, candidate: Candidate, feature: str, team: str, prompt_limits, output_limits):
    """The model the candidate would serve this group with."""
    if row["requested_model"] not in AUTO:
        return row["requested_model"]  # a caller who names a model gets it
    priority = candidate.priorities.get(feature) or candidate.priorities.get(team) or "medium"
    for rule in candidate.rules:
        if rule.priority and rule.priority != priority:
            continue
        if rule.max_prompt_tokens is not None and not row[f"p{rule.max_prompt_tokens}"]:
            continue
        if rule.max_output_tokens is not None and not row[f"o{rule.max_output_tokens}"]:
            continue
        return rule.chain[0]
    return None


def _ratio_of(candidate: Candidate, providers: dict, kinds: dict):
    def ratio(model: str) -> Decimal:
        ratios = candidate.token_ratios
        return ratios.get(providers.get(model, ""), ratios.get(kinds.get(model, ""), Decimal(1)))

    return ratio


def _scale(usage: Usage, factor: Decimal) -> Usage:
    if factor == 1:
        return usage

    def scaled(n: int) -> int:
        return int((n * factor).to_integral_value())

    return Usage(
        *(
            scaled(n)
            for n in (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
            )
        )
    )


def _result(per_feature, shares, start, end, candidate: Candidate) -> dict:
    total = Tally()
    rows = []
    for (team, feature), t in sorted(per_feature.items()):
        for attr in ("requests", "actual", "candidate", "baseline", "unpriced", "no_baseline"):
            setattr(total, attr, getattr(total, attr) + getattr(t, attr))
        rows.append({"team": team, "feature": f"{team}/{feature}", **_money(t)})
    requests = sum(shares.values())
    return {
        "start": start,
        "end": end,
        "rules": [r.__dict__ for r in candidate.rules],
        "rows": rows,
        "total": _money(total),
        "models": [
            {"model": m, "requests": n, "share": round(n / requests, 4) if requests else None}
            for m, n in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "caveats": list(CAVEATS),
    }


def _money(t: Tally) -> dict:
    """Figures of one row or the total; baseline figures are None (shown as a dash) when some
    request in it has no priced baseline, rather than a partial sum or $0."""
    whole = not t.no_baseline
    return {
        "requests": t.requests,
        "actual_usd": units_to_usd(t.actual),
        "candidate_usd": units_to_usd(t.candidate),
        "baseline_usd": units_to_usd(t.baseline) if whole else None,
        "vs_actual_usd": units_to_usd(t.candidate - t.actual),
        "vs_baseline_usd": units_to_usd(t.candidate - t.baseline) if whole else None,
        "unpriced": t.unpriced,
        "no_baseline": t.no_baseline,
    }
