"""Savings against the baseline (gateway/pricehistory.py): what the same traffic would have
cost on the baseline model, repriced from the rollups' token counts at the baseline's price
on the day of each request, minus what it cost.

Definitions (the pages link to them, see templates/reports/_definitions.html):
- baseline: every request that reached a provider at a known price, and every cache hit,
  priced on the baseline model (a baseline with `cache: true` prices the hits at $0);
- routing savings: the baseline price of the requests a provider answered minus what they
  cost (the served model against the baseline model; negative when a dearer model served);
- cache savings: the cache hits priced at the baseline;
- total savings = routing + cache = baseline − spend;
- fallback extra cost: what fallbacks cost beyond the model their route would have used
  (already inside the routing figure; shown so that an outage's price is visible).

Money is summed in integer units (1e-10 USD, gateway/money.py) and leaves as Decimal USD.
Repricing works on sums of tokens per period and baseline (the default one, or a team's
own): a few rows per day, whatever the traffic and however many teams. Pricing a sum
instead of each request differs by at most 1e-10 USD per request.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Case, F, QuerySet, Sum, Value, When

from gateway.money import cost_of, units_to_usd
from gateway.pricehistory import PriceHistory
from gateway.providers.base import Usage
from reports.models import Rollup

SUMMED = (
    "cost_units",
    "fallback_extra_units",
    "billed_input_tokens",
    "billed_output_tokens",
    "billed_cached_tokens",
    "billed_cache_write_tokens",
    "hit_input_tokens",
    "hit_output_tokens",
    "hit_cached_tokens",
)


@dataclass(slots=True)
class Savings:
    """Sums in units. `complete` is False when some team has no (priced) baseline."""

    spend: int = 0
    baseline_billed: int = 0
    baseline_hits: int = 0
    fallback_extra: int = 0
    complete: bool = True

    @property
    def baseline(self) -> int:
        return self.baseline_billed + self.baseline_hits

    @property
    def routing(self) -> int:
        return self.baseline_billed - self.spend

    @property
    def total(self) -> int:
        return self.baseline - self.spend

    def add(self, other: Savings) -> None:
        self.spend += other.spend
        self.baseline_billed += other.baseline_billed
        self.baseline_hits += other.baseline_hits
        self.fallback_extra += other.fallback_extra
        self.complete = self.complete and other.complete

    def as_dict(self) -> dict:
        percent = None
        if self.baseline:
            percent = (Decimal(self.total) * 100 / Decimal(self.baseline)).quantize(Decimal("0.1"))
        return {
            "spend_usd": units_to_usd(self.spend),
            "baseline_usd": units_to_usd(self.baseline),
            "routing_usd": units_to_usd(self.routing),
            "cache_usd": units_to_usd(self.baseline_hits),
            "fallback_extra_usd": units_to_usd(self.fallback_extra),
            "total_usd": units_to_usd(self.total),
            "percent": percent,
            "complete": self.complete,
        }


def reprice(row: dict, *, day: dt.date, book: PriceHistory, team_id: int) -> Savings:
    """One aggregated rollup row (SUMMED keys) against the baseline of its team and day."""
    result = Savings(spend=int(row["cost_units"] or 0))
    result.fallback_extra = int(row["fallback_extra_units"] or 0)
    baseline = book.baseline(team_id)
    prices = book.prices(baseline.model, day) if baseline else None
    if baseline is None or prices is None or not prices.known:
        result.complete = False
        result.baseline_billed = result.spend  # no baseline: no savings claimed
        return result

    def tokens(prefix: str, *names: str) -> Usage:
        return Usage(*(int(row[f"{prefix}_{n}_tokens"] or 0) for n in names))

    billed = tokens("billed", "input", "output", "cached", "cache_write")
    result.baseline_billed = cost_of(billed, prices).units
    if not baseline.cache:
        result.baseline_hits = cost_of(tokens("hit", "input", "output", "cached"), prices).units
    return result


def savings_by(
    qs: QuerySet[Rollup], by: Iterable[str] = (), *, book: PriceHistory | None = None
) -> dict[tuple, Savings]:
    """Savings per value of the `by` fields ("bucket" is the rollup's period).

    Without "bucket", the rows are summed in SQL over each stretch of days in which no
    baseline price changed (usually the whole range: one row per key, not one per day and
    key; a month of 20,000 features was 600,000 rows to read), and each sum is repriced at
    the prices of its stretch: the same figures, as repricing is linear in tokens."""
    return {key: saved for key, (saved, _) in savings_and_sums(qs, by, book=book).items()}


def savings_and_sums(
    qs: QuerySet[Rollup],
    by: Iterable[str] = (),
    also: Iterable[str] | Mapping[str, Any] = (),
    *,
    book: PriceHistory | None = None,
) -> dict[tuple, tuple[Savings, Counter[str]]]:
    """`savings_by`, and per key the sums of the `also` fields (or of the aggregates a
    mapping names) from the same query: a page that wants both reads the rows once."""
    book = book or PriceHistory.load()
    period = qs.model.PERIOD_FIELD
    fields = [period if f == "bucket" else f for f in by]
    changes = [] if period in fields else book.change_days()
    if period in fields:
        group, day_of = period, lambda row: row[period].astimezone(dt.UTC).date()
    else:
        qs = qs.annotate(stretch=_stretch(period, changes))
        group, day_of = "stretch", lambda row: _stretch_day(row["stretch"], changes)
    if "team_id" in fields:
        owner = "team_id"
    else:  # teams on the default baseline are summed together: a row per baseline, not team
        qs, owner = qs.annotate(baseline_owner=_baseline_owner(book)), "baseline_owner"
    extra = dict(also) if isinstance(also, Mapping) else {name: Sum(name) for name in also}
    rows = (
        qs.order_by()
        .values(*dict.fromkeys([group, owner, *fields]))
        .annotate(
            **{f"s_{name}": Sum(name) for name in SUMMED},
            **{f"t_{name}": aggregate for name, aggregate in extra.items()},
        )
    )
    out: dict[tuple, tuple[Savings, Counter[str]]] = {}
    for row in rows:
        sums = {name: row[f"s_{name}"] for name in SUMMED}
        key = tuple(row[f] for f in fields)
        saved, totals = out.setdefault(key, (Savings(), Counter()))
        saved.add(reprice(sums, day=day_of(row), book=book, team_id=row[owner]))
        totals.update({name: row[f"t_{name}"] or 0 for name in extra})
    return out


def _baseline_owner(book: PriceHistory):
    """The team whose own baseline prices a row, or 0 for the default baseline (no team)."""
    own = [team_id for team_id in book.baselines if team_id is not None]
    if not own:
        return Value(0)
    return Case(When(team_id__in=own, then=F("team_id")), default=Value(0))


def _stretch(period: str, changes: list[dt.date]):
    """Which stretch between price changes a row's period falls in: 0 before the first."""
    if not changes:
        return Value(0)
    whens = [
        When(**{f"{period}__lt": dt.datetime.combine(day, dt.time(), dt.UTC)}, then=Value(i))
        for i, day in enumerate(changes)
    ]
    return Case(*whens, default=Value(len(changes)))


def _stretch_day(stretch: int, changes: list[dt.date]) -> dt.date:
    """A day of that stretch, to price it at (each stretch has one price per model)."""
    if stretch == 0:
        return changes[0] - dt.timedelta(days=1) if changes else dt.date(2000, 1, 1)
    return changes[stretch - 1]


def total_savings(qs: QuerySet[Rollup], *, book: PriceHistory | None = None) -> Savings:
    return savings_by(qs, book=book).get((), Savings())


def baseline_label(book: PriceHistory, team_ids: Iterable[int] | None) -> str:
    """The baseline(s) the figures are measured against, in words."""
    ids = list(book.baselines) if team_ids is None else list(team_ids)
    names = sorted(
        {
            f"{b.model}{' with cache' if b.cache else ', no cache'}"
            for b in (book.baseline(t) for t in ids)
            if b is not None
        }
    )
    return " / ".join(names) or "no baseline set"
