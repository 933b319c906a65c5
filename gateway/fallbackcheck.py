"""What `importconfig` and the admin warn about fallback prices (gateway/ceiling.py).

- A chain that jumps in price by more than its ceiling: the dearer fallback is skipped
  (except for high-priority requests), which an admin should know before an outage.
- A budget that could not cover one hour of an outage at the fallback's price: the team's
  busiest hour of the last 7 days (input and output tokens, from the ledger) priced at the
  dearest fallback its chains may reach under their ceilings. A hard budget then refuses for
  the rest of its window, as the scenario's lockout did. No traffic yet: nothing to warn.

Warnings never block a save or an import: they are lines of text for a person to read.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from gateway import ceiling
from gateway.money import cost_of, units_to_usd, usd_to_units
from gateway.providers.base import Usage
from gateway.snapshot import ModelSnap, Snapshot, TeamSnap, load_snapshot

LOOKBACK = timedelta(days=7)


def warnings(snapshot: Snapshot | None = None) -> list[str]:
    snapshot = snapshot or load_snapshot()
    return [*price_jumps(snapshot), *outage_budgets(snapshot)]


def _chains(snapshot: Snapshot, team: TeamSnap) -> Iterator[tuple[str, tuple[str, ...], Decimal]]:
    """(where, chain, ceiling) for every chain this team may follow under a ceiling."""
    for route in snapshot.routes:
        c = ceiling.ceiling_for(team, route)
        if c is not None and len(route.chain) > 1:
            yield f"route {route.name}", route.chain, c
    if team.fallback_ceiling is not None:
        for model in snapshot.models.values():
            if model.fallbacks:
                yield f"model {model.name}", model.chain_names, team.fallback_ceiling


def _models(snapshot: Snapshot, names: tuple[str, ...]) -> list[ModelSnap]:
    return [snapshot.models[n] for n in names if n in snapshot.models]


def price_jumps(snapshot: Snapshot) -> list[str]:
    """One line per chain and ceiling whose fallback costs more than the ceiling allows."""
    teams_by_jump: dict[tuple[str, str], list[str]] = {}
    for team in snapshot.teams.values():
        for where, names, c in _chains(snapshot, team):
            for model, why in ceiling.chain_skips(_models(snapshot, names), c).items():
                teams_by_jump.setdefault((where, f"{model} costs {why}"), []).append(team.name)
    return [
        f"{where}: {jump} (for {', '.join(sorted(teams))}); it is skipped as a fallback "
        "except for high-priority requests."
        for (where, jump), teams in sorted(teams_by_jump.items())
    ]


def dearest_fallback(snapshot: Snapshot, team: TeamSnap) -> ModelSnap | None:
    """The dearest model this team's requests may fall back to, ceilings applied."""
    dearest: tuple[Decimal, ModelSnap] | None = None
    chains = [(r.chain, ceiling.ceiling_for(team, r)) for r in snapshot.routes]
    chains += [(m.chain_names, team.fallback_ceiling) for m in snapshot.models.values()]
    for names, c in chains:
        chain = _models(snapshot, names)
        skipped = ceiling.chain_skips(chain, c) if c is not None else {}
        for model in chain[1:]:
            if model.name in skipped or not model.prices.known:
                continue
            price = model.prices.input + model.prices.output  # type: ignore[operator]
            if dearest is None or price > dearest[0]:
                dearest = (price, model)
    return dearest[1] if dearest else None


def busiest_hour(team_id: int, feature_id: int | None) -> Usage | None:
    from gateway.models import UsageRecord

    rows = (
        UsageRecord.objects.filter(
            team_id=team_id, created_at__gte=timezone.now() - LOOKBACK, status="ok"
        )
        .filter(**({"feature_id": feature_id} if feature_id else {}))
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"))
        .order_by()
    )
    best = max(rows, key=lambda r: (r["i"] or 0) + (r["o"] or 0), default=None)
    return Usage(best["i"] or 0, best["o"] or 0) if best else None


def outage_budgets(snapshot: Snapshot) -> list[str]:
    lines: list[str] = []
    for team in snapshot.teams.values():
        fallback = dearest_fallback(snapshot, team)
        if fallback is None:
            continue
        for budget in team.budgets:
            window, limit = (
                ("daily", budget.daily_units)
                if budget.daily_units is not None
                else ("monthly", budget.monthly_units)
            )
            if limit is None:
                continue
            hour = busiest_hour(team.id, budget.feature_id)
            if hour is None:
                continue
            cost = cost_of(hour, fallback.prices).usd
            if usd_to_units(cost) > limit:
                feature = next(
                    (f.name for f in team.features.values() if f.id == budget.feature_id), None
                )
                scope = f"{team.name}/{feature}" if feature else team.name
                lines.append(
                    f"budget of {scope} ({window} ${units_to_usd(limit).normalize():f}): an hour "
                    f"of outage at {fallback.name}'s price would cost about ${cost:.2f} (the "
                    f"busiest hour of the last 7 days: {hour.input_tokens:,} input and "
                    f"{hour.output_tokens:,} output tokens)"
                    + (
                        ", and being hard it would refuse for the rest of the window."
                        if budget.hard
                        else "."
                    )
                )
    return lines
