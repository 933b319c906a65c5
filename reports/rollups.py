"""Keeps the hourly and daily rollups in step with the ledger.

The ledger drainer calls `apply(records)` in the transaction that inserts the records, so a
rollup never counts a record that is not in the ledger, nor misses one that is. `apply`
adds to the rollups with `INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n` (see
reports/upsert.py): concurrent drainers never lose an increment and cannot deadlock.

`rebuild(start, end)` recomputes whole hours from the ledger, then the days that contain
them from the hourly rows. On PostgreSQL it takes an
advisory lock exclusively while drainers take it shared, so a rebuild never interleaves with
a drain (a record committed between its delete and its read would otherwise be lost or
counted twice). SQLite serialises writers on its own.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import TruncDay
from django.utils.dateparse import parse_datetime

from gateway.models import UsageRecord
from gateway.money import cost_of, usd_to_units
from gateway.pricehistory import PriceHistory
from gateway.providers.base import Usage
from reports.models import (
    COUNTER_FIELDS,
    DIMENSION_FIELDS,
    LATENCY_BOUNDS_MS,
    CircuitEvent,
    DailyRollup,
    HourlyRollup,
)
from reports.upsert import Key, upsert

# Arbitrary constant naming the rollup lock among PostgreSQL advisory locks.
ROLLUP_LOCK_ID = 0x5E9081
LEDGER_FIELDS = (
    "created_at",
    "team_id",
    "feature_id",
    "served_model",
    "provider",
    "requested_model",
    "attempts",
    "status",
    "cache",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cost_usd",
    "saved_usd",
    "estimated",
    "unpriced",
    "latency_ms",
    "attempt_log",
    "endpoint",
)
_LAT0 = COUNTER_FIELDS.index("lat_b0")
_INDEX = {name: i for i, name in enumerate(COUNTER_FIELDS)}
# Outcomes of a request that an answer reached: with more than one attempt, a fallback.
_RESCUED = (UsageRecord.Status.OK, UsageRecord.Status.STREAM_ERROR)


def apply(records: list[UsageRecord]) -> None:
    """Add ledger records to the hourly rollups. Call it in the transaction that inserts them."""
    if not records:
        return
    book = PriceHistory.load()
    facts = (tuple(getattr(r, f) for f in LEDGER_FIELDS) for r in records)
    hourly = accumulate(facts, book)
    with transaction.atomic():
        _lock(shared=True)
        upsert(HourlyRollup, hourly)
        upsert(DailyRollup, by_day(hourly))


def rebuild(start: dt.datetime, end: dt.datetime) -> int:
    """Recompute the hourly rollups of every hour touching [start, end) from the ledger, and
    the daily rollups of the days touching it from the hourly ones.

    Idempotent; returns the number of hourly rows written.
    """
    start, end = floor_hour(start), _ceil_hour(end)
    first_day, end_day = floor_day(start), floor_day(end - dt.timedelta(microseconds=1))
    end_day += dt.timedelta(days=1)
    book = PriceHistory.load()
    with transaction.atomic():
        _lock(shared=False)
        HourlyRollup.objects.in_window(start, end).delete()
        ledger = (
            UsageRecord.objects.between(start, end)
            .order_by()
            .values_list(*LEDGER_FIELDS)
            .iterator(chunk_size=5000)
        )
        hourly = accumulate(ledger, book)
        upsert(HourlyRollup, hourly)
        DailyRollup.objects.in_window(first_day, end_day).delete()
        upsert(DailyRollup, _days_from_hours(first_day, end_day))
    return len(hourly)


def _days_from_hours(start: dt.datetime, end: dt.datetime) -> dict[Key, list[int]]:
    rows = (
        HourlyRollup.objects.in_window(start, end)
        .order_by()
        .annotate(day=TruncDay("hour", tzinfo=dt.UTC))
        .values("day", *DIMENSION_FIELDS)
        .annotate(**{f"sum_{c}": Sum(c) for c in COUNTER_FIELDS})
    )
    return {
        (floor_day(r["day"]), *(r[d] for d in DIMENSION_FIELDS)): [
            int(r[f"sum_{c}"]) for c in COUNTER_FIELDS
        ]
        for r in rows
    }


def by_day(hourly: dict[Key, list[int]]) -> dict[Key, list[int]]:
    """Fold hourly sums into daily sums."""
    daily: dict[Key, list[int]] = {}
    for (hour, team, feature, model, provider, endpoint), counters in hourly.items():
        key = (floor_day(hour), team, feature, model, provider, endpoint)
        row = daily.get(key)
        if row is None:
            daily[key] = list(counters)
        else:
            for i, n in enumerate(counters):
                row[i] += n
    return daily


def accumulate(facts: Iterable[tuple], book: PriceHistory) -> dict[Key, list[int]]:
    """Sum ledger facts (tuples in LEDGER_FIELDS order) per rollup key."""
    sums: dict[Key, list[int]] = {}
    width = len(COUNTER_FIELDS)
    for fact in facts:
        key = _key_of(fact)
        row = sums.get(key)
        if row is None:
            row = sums[key] = [0] * width
        _add(row, fact, book)
    return sums


def _key_of(fact: tuple) -> Key:
    created_at, team_id, feature_id, served_model, provider = fact[:5]
    endpoint = fact[-1] or "chat.completions"
    return (floor_hour(created_at), team_id, feature_id or 0, served_model, provider, endpoint)


def _add(row: list[int], fact: tuple, book: PriceHistory) -> None:
    (
        created_at,
        _,
        _,
        served,
        _,
        _,
        attempts,
        status,
        cache,
        input_tokens,
        output_tokens,
        cached_tokens,
        cache_write_tokens,
        cost_usd,
        saved_usd,
        estimated,
        unpriced,
        latency,
        attempt_log,
        _,
    ) = fact
    i = _INDEX
    hit = cache == UsageRecord.Cache.HIT
    row[i["requests"]] += 1
    row[i["cache_hits"]] += hit
    row[i["errors"]] += status == UsageRecord.Status.ERROR
    row[i["refused"]] += status == UsageRecord.Status.REFUSED
    row[i["stream_errors"]] += status == UsageRecord.Status.STREAM_ERROR
    # A fallback is a request a later model rescued; one that failed on every model is an
    # error (counted above), not a fallback.
    rescued = attempts > 1 and status in _RESCUED
    row[i["fallbacks"]] += rescued
    row[i["input_tokens"]] += input_tokens
    row[i["output_tokens"]] += output_tokens
    row[i["cached_tokens"]] += cached_tokens
    row[i["cost_units"]] += usd_to_units(Decimal(cost_usd))
    row[i["saved_units"]] += usd_to_units(Decimal(saved_usd))
    row[i["estimated"]] += bool(estimated)
    row[i["unpriced"]] += bool(unpriced)
    if hit:  # repriced at the baseline by the reports (reports/savings.py)
        row[i["hit_input_tokens"]] += input_tokens
        row[i["hit_output_tokens"]] += output_tokens
        row[i["hit_cached_tokens"]] += cached_tokens
        return
    if status == UsageRecord.Status.REFUSED:
        return  # never reached a provider: no latency, no tokens
    row[i["latency_count"]] += 1
    row[i["latency_ms_sum"]] += latency
    row[_LAT0 + bisect_left(LATENCY_BOUNDS_MS, latency)] += 1
    if unpriced:
        return  # its cost is unknown: neither it nor its baseline is counted
    row[i["billed_input_tokens"]] += input_tokens
    row[i["billed_output_tokens"]] += output_tokens
    row[i["billed_cached_tokens"]] += cached_tokens
    row[i["billed_cache_write_tokens"]] += cache_write_tokens
    if rescued and attempt_log:
        usage = Usage(input_tokens, output_tokens, cached_tokens, cache_write_tokens)
        row[i["fallback_extra_units"]] += fallback_extra_units(
            book,
            intended=attempt_log[0].get("model", ""),
            day=_day(created_at),
            usage=usage,
            cost_usd=Decimal(cost_usd),
        )


def fallback_extra_units(
    book: PriceHistory, *, intended: str, day: dt.date, usage: Usage, cost_usd: Decimal
) -> int:
    """What a fallback cost beyond the route's first model: the served model's actual cost
    minus the first model's price (on the request's day) for the same tokens. Negative when
    the fallback was cheaper; 0 when the first model has no price."""
    prices = book.prices(intended, day)
    if prices is None or not prices.known:
        return 0
    return usd_to_units(cost_usd - cost_of(usage, prices).usd)


def _day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(dt.UTC).date()


def _lock(*, shared: bool) -> None:
    if connection.vendor != "postgresql":
        return
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {fn}(%s)", [ROLLUP_LOCK_ID])


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: dt.datetime) -> dt.datetime:
    return floor_hour(moment).replace(hour=0)


def _ceil_hour(moment: dt.datetime) -> dt.datetime:
    floored = floor_hour(moment)
    return floored if floored == moment else floored + dt.timedelta(hours=1)


def record_circuit_events(events: list[dict]) -> None:
    """Store circuit-breaker openings: dicts with provider, opened_at (ISO 8601), reason and
    optionally model and kind. Delivering the same event twice stores it once."""
    rows = []
    for event in events:
        opened_at = parse_datetime(event["opened_at"])
        if opened_at is None:
            raise ValueError(f"opened_at={event['opened_at']!r} is not an ISO 8601 date-time")
        if opened_at.tzinfo is None:
            opened_at = opened_at.replace(tzinfo=dt.UTC)
        rows.append(
            CircuitEvent(
                provider=event["provider"],
                model=event.get("model") or "",
                kind=event.get("kind") or "opened",
                opened_at=opened_at,
                reason=(event.get("reason") or "")[:255],
            )
        )
    CircuitEvent.objects.bulk_create(rows, ignore_conflicts=True)
