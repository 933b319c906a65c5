"""Keeps the hourly and daily rollups in step with the ledger.

The ledger drainer calls `apply(records)` in the transaction that inserts the records, so a
rollup never counts a record that is not in the ledger, nor misses one that is. `apply`
adds to the rollups with `INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n` (see
reports/upsert.py): concurrent drainers never lose an increment and cannot deadlock.

`rebuild(start, end)` repairs whole hours, then the days that contain them, without a lock
that ingest waits for, and in memory bounded by one hour's keys. Each hour's ledger and
rollups are read in one snapshot (REPEATABLE READ on PostgreSQL; a read transaction on
SQLite), and their difference is added to the rollups afterwards, like a drain's increment.
Since a drain inserts its records and adds them to the rollups in one transaction, the
difference seen in a snapshot is exactly the drift, and adding it is right however many
drains commit in between. Two repairs at once would add a difference twice, so repairs
(and only they) take an advisory lock of their own. `stale_hours` finds the hours whose
request count, cost or tokens differ, with two SQL aggregates: what the periodic job
repairs (reports/tasks.py).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncDay, TruncHour
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

# Arbitrary constant naming the repairs' lock among PostgreSQL advisory locks.
REPAIR_LOCK_ID = 0x5E9082
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
_ZERO = Decimal(0)
T = TypeVar("T")
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
        upsert(HourlyRollup, hourly)
        upsert(DailyRollup, by_day(hourly))


def rebuild(start: dt.datetime, end: dt.datetime) -> int:
    """Bring the hourly rollups of every hour touching [start, end) back in step with the
    ledger, then the daily rollups of the days touching it with their hours (see the
    module docstring). Idempotent; returns the number of hourly rows changed."""
    start, end = floor_hour(start), _ceil_hour(end)
    return repair(_hours(start, end))


def repair(hours: list[dt.datetime]) -> int:
    """`rebuild` for these hours (UTC, whole): returns the number of hourly rows changed.

    Days the ledger no longer holds whole (pruned by `pruneledger`, whose roll-ups are the
    only record left of them) are never touched."""
    book = PriceHistory.load()
    changed = 0
    kept = first_whole_day()
    hours = [hour for hour in hours if kept is not None and hour >= kept]
    with _repair_lock():
        for hour in hours:
            diff = _in_snapshot(partial(_hour_diff, hour, book))
            _add_diff(HourlyRollup, diff, hour, hour + HOUR)
            changed += len(diff)
        for day in sorted({floor_day(hour) for hour in hours}):
            diff = _in_snapshot(partial(_day_diff, day))
            _add_diff(DailyRollup, diff, day, day + DAY)
    return changed


def first_whole_day() -> dt.datetime | None:
    """The first UTC day the ledger holds whole, or None when it holds nothing. `pruneledger`
    deletes whole days, oldest first; a day it was interrupted in has fewer ledger rows than
    its daily roll-ups count, and is not whole."""
    oldest = UsageRecord.objects.aggregate(at=Min("created_at"))["at"]
    if oldest is None:
        return None
    day = floor_day(oldest)
    rows = UsageRecord.objects.between(day, day + DAY).count()
    rolled = DailyRollup.objects.filter(day=day).aggregate(n=Sum("requests"))["n"] or 0
    return day + DAY if rolled > rows else day


def stale_hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The hours touching [start, end) whose rollups count other requests, cost or tokens
    than the ledger: two aggregates in one snapshot, no ledger row read in Python."""
    start, end = floor_hour(start), _ceil_hour(end)

    def compare() -> list[dt.datetime]:
        ledger = {
            row["at"]: (row["n"], usd_to_units(row["cost"] or _ZERO), row["i"] or 0, row["o"] or 0)
            for row in UsageRecord.objects.between(start, end)
            .order_by()
            .annotate(at=TruncHour("created_at", tzinfo=dt.UTC))
            .values("at")
            .annotate(
                n=Count("id"), cost=Sum("cost_usd"), i=Sum("input_tokens"), o=Sum("output_tokens")
            )
        }
        rolled = {
            row["hour"]: (row["n"], row["cost"], row["i"], row["o"])
            for row in HourlyRollup.objects.in_window(start, end)
            .order_by()
            .values("hour")
            .annotate(
                n=Sum("requests"),
                cost=Sum("cost_units"),
                i=Sum("input_tokens"),
                o=Sum("output_tokens"),
            )
        }
        return sorted(
            hour
            for hour in set(ledger) | set(rolled)
            if ledger.get(hour, (0, 0, 0, 0)) != rolled.get(hour, (0, 0, 0, 0))
        )

    return _in_snapshot(compare)


def _hours(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    hours, hour = [], start
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def _hour_diff(hour: dt.datetime, book: PriceHistory) -> dict[Key, list[int]]:
    ledger = (
        UsageRecord.objects.between(hour, hour + HOUR)
        .order_by()
        .values_list(*LEDGER_FIELDS)
        .iterator(chunk_size=5000)
    )
    return _diff(accumulate(ledger, book), _rows(HourlyRollup, hour, hour + HOUR))


def _day_diff(day: dt.datetime) -> dict[Key, list[int]]:
    return _diff(_days_from_hours(day, day + DAY), _rows(DailyRollup, day, day + DAY))


def _rows(model, start: dt.datetime, end: dt.datetime) -> dict[Key, list[int]]:
    rows = (
        model.objects.in_window(start, end)
        .order_by()
        .values_list(model.PERIOD_FIELD, *DIMENSION_FIELDS, *COUNTER_FIELDS)
    )
    width = 1 + len(DIMENSION_FIELDS)
    return {(floor_hour(r[0]), *r[1:width]): list(r[width:]) for r in rows}


def _diff(want: dict[Key, list[int]], have: dict[Key, list[int]]) -> dict[Key, list[int]]:
    """What to add to `have` to make it `want`, for the keys where they differ."""
    zero = [0] * len(COUNTER_FIELDS)
    out = {}
    for key in want.keys() | have.keys():
        delta = [w - h for w, h in zip(want.get(key, zero), have.get(key, zero), strict=True)]
        if any(delta):
            out[key] = delta
    return out


def _add_diff(model, diff: dict[Key, list[int]], start: dt.datetime, end: dt.datetime) -> None:
    """Add the difference (an increment, as a drain's) and drop the rows it emptied: a row
    with no request left counts nothing (a drain adding to it meanwhile keeps it: the
    DELETE re-checks a row another transaction changed)."""
    if not diff:
        return
    with transaction.atomic():
        upsert(model, diff)
        model.objects.in_window(start, end).filter(requests=0).delete()


def _in_snapshot(read: Callable[[], T]) -> T:
    """`read()` in one consistent snapshot of the database (see the module docstring)."""
    if connection.in_atomic_block:  # a caller's transaction: its isolation is the caller's
        return read()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return read()


@contextmanager
def _repair_lock() -> Iterator[None]:
    """One repair at a time (PostgreSQL; SQLite serialises writers, and the embedded mode
    runs one process). Drains never take it."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [REPAIR_LOCK_ID])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [REPAIR_LOCK_ID])


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
    row[i["lost"]] += status == UsageRecord.Status.LOST
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
