"""Fallback price ceilings: a fallback may cost at most N times the first choice's price.

A route's ceiling (else its team's) caps what the fallback loop may climb to when the first
choice fails: a dearer model is skipped, and the skip is written in the attempt log, unless
the request is `high` priority or the route allows any price. The first model of a chain is
never skipped (it is no fallback).

A model's price multiple over the first choice is the larger of its input and output price
ratios (a model dearer on either side can cost that much more). An unpriced fallback has no
known multiple and counts as above any ceiling; an unpriced (or free) first choice gives no
reference, so nothing is skipped.

Everything is computed when a configuration snapshot is built (`table`, from
`Snapshot.__post_init__`): per request the check is one dict lookup for the chain and one per
fallback tried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.money import Prices

if TYPE_CHECKING:
    from gateway.snapshot import ModelSnap, RouteSnap, Snapshot, TeamSnap

NO_SKIPS: Mapping[str, str] = {}
UNPRICED = Decimal("Infinity")
SKIP_ERROR = "above the fallback price ceiling"


def price_multiple(first: Prices, other: Prices) -> Decimal | None:
    """How many times `first`'s price `other` costs; None when `first` gives no reference."""
    if not first.known or not first.input or not first.output:
        return None
    if not other.known:
        return UNPRICED
    return max(other.input / first.input, other.output / first.output)  # type: ignore[operator]


def multiple_text(multiple: Decimal) -> str:
    return "unpriced" if multiple == UNPRICED else f"{multiple.quantize(Decimal('0.1'))}×"


def chain_skips(chain: list[ModelSnap], ceiling: Decimal) -> dict[str, str]:
    """The fallbacks of `chain` above `ceiling`, each with the reason the attempt log gives."""
    if not chain:
        return {}
    first = chain[0]
    skips: dict[str, str] = {}
    for model in chain[1:]:
        multiple = price_multiple(first.prices, model.prices)
        if multiple is not None and multiple > ceiling:
            skips[model.name] = (
                f"{multiple_text(multiple)} the price of {first.name}; "
                f"the ceiling is {ceiling.normalize():f}×"
            )
    return skips


def precompute(
    models: Mapping[str, ModelSnap],
    chains: Iterable[tuple[str, ...]],
    ceilings: Iterable[Decimal],
) -> dict[tuple[Decimal, tuple[str, ...]], dict[str, str]]:
    """The skips of every chain under every ceiling in use (a few ceilings, tens of chains)."""
    table: dict[tuple[Decimal, tuple[str, ...]], dict[str, str]] = {}
    distinct = set(ceilings)
    for names in set(chains):
        chain = [models[n] for n in names if n in models]
        for ceiling in distinct:
            skips = chain_skips(chain, ceiling)
            if skips:
                table[(ceiling, names)] = skips
    return table


def table(
    teams: Mapping[int, TeamSnap], models: Mapping[str, ModelSnap], routes: Iterable[RouteSnap]
) -> dict[tuple[Decimal, tuple[str, ...]], dict[str, str]]:
    """`precompute` for a snapshot: its routes' and models' chains under every ceiling its
    teams and routes set (nothing to compute when none does)."""
    routes = tuple(routes)
    ceilings = [t.fallback_ceiling for t in teams.values() if t.fallback_ceiling is not None]
    ceilings += [r.fallback_ceiling for r in routes if r.fallback_ceiling is not None]
    if not ceilings:
        return {}
    chains = [r.chain for r in routes] + [m.chain_names for m in models.values()]
    return precompute(models, chains, ceilings)


def ceiling_for(team: TeamSnap, route: RouteSnap | None) -> Decimal | None:
    if route is not None:
        if route.allow_above_ceiling:
            return None
        if route.fallback_ceiling is not None:
            return route.fallback_ceiling
    return team.fallback_ceiling


def skips_for(
    snapshot: Snapshot,
    team: TeamSnap,
    route: RouteSnap | None,
    names: tuple[str, ...],
    priority: str,
) -> Mapping[str, str]:
    """The fallbacks this request must skip, by model name, with their reasons."""
    if priority == "high":
        return NO_SKIPS
    ceiling = ceiling_for(team, route)
    if ceiling is None:
        return NO_SKIPS
    return snapshot.ceiling_skips.get((ceiling, names), NO_SKIPS)
