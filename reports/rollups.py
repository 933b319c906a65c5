"""Keeps the hourly rollups in step with the ledger.

The ledger drainer calls `apply(records)` in the transaction that inserts the records, so a
rollup never counts a record that is not in the ledger, nor misses one that is. `apply`
adds to the rollups with one `INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n`
(PostgreSQL and SQLite): concurrent drainers never lose an increment, and rows are written
in key order so two drainers lock them in the same order (no deadlock).

`rebuild(start, end)` recomputes whole hours from the ledger. On PostgreSQL it takes an
advisory lock exclusively while drainers take it shared, so a rebuild never interleaves with
a drain (a record committed between its delete and its read would otherwise be lost or
counted twice). SQLite serialises writers on its own.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from decimal import Decimal

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from gateway.models import UsageRecord
from gateway.money import usd_to_units
from gateway.providers.base import Usage
from reports.models import COUNTER_FIELDS, KEY_FIELDS, LATENCY_BOUNDS_MS, CircuitEvent, HourlyRollup
from reports.savings import PriceBook, load_price_book

# Arbitrary constant naming the rollup lock among PostgreSQL advisory locks.
ROLLUP_LOCK_ID = 0x5E9081
UPSERT_BATCH = 500  # rows per statement: 500 × 38 parameters stays under SQLite's limit
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
)
_LAT0 = COUNTER_FIELDS.index("lat_b0")
_INDEX = {name: i for i, name in enumerate(COUNTER_FIELDS)}

Key = tuple[dt.datetime, int, int, str, str]


def apply(records: list[UsageRecord]) -> None:
    """Add ledger records to the hourly rollups. Call it in the transaction that inserts them."""
    if not records:
        return
    book = load_price_book()
    facts = (tuple(getattr(r, f) for f in LEDGER_FIELDS) for r in records)
    with transaction.atomic():
        _lock(shared=True)
        _upsert(accumulate(facts, book))


def rebuild(start: dt.datetime, end: dt.datetime) -> int:
    """Recompute the rollups of every hour touching [start, end) from the ledger.

    Idempotent; returns the number of rollup rows written.
    """
    start, end = floor_hour(start), _ceil_hour(end)
    book = load_price_book()
    with transaction.atomic():
        _lock(shared=False)
        HourlyRollup.objects.filter(hour__gte=start, hour__lt=end).delete()
        ledger = (
            UsageRecord.objects.between(start, end)
            .order_by()
            .values_list(*LEDGER_FIELDS)
            .iterator(chunk_size=5000)
        )
        sums = accumulate(ledger, book)
        _upsert(sums)
    return len(sums)


def accumulate(facts: Iterable[tuple], book: PriceBook) -> dict[Key, list[int]]:
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
    return (floor_hour(created_at), team_id, feature_id or 0, served_model, provider)


def _add(row: list[int], fact: tuple, book: PriceBook) -> None:
    (
        _,
        _,
        _,
        served,
        _,
        requested,
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
    ) = fact
    i = _INDEX
    hit = cache == UsageRecord.Cache.HIT
    row[i["requests"]] += 1
    row[i["cache_hits"]] += hit
    row[i["errors"]] += status == UsageRecord.Status.ERROR
    row[i["refused"]] += status == UsageRecord.Status.REFUSED
    row[i["stream_errors"]] += status == UsageRecord.Status.STREAM_ERROR
    row[i["fallbacks"]] += attempts > 1
    row[i["input_tokens"]] += input_tokens
    row[i["output_tokens"]] += output_tokens
    row[i["cached_tokens"]] += cached_tokens
    row[i["cost_units"]] += usd_to_units(Decimal(cost_usd))
    row[i["saved_units"]] += usd_to_units(Decimal(saved_usd))
    row[i["estimated"]] += bool(estimated)
    row[i["unpriced"]] += bool(unpriced)
    if hit or status == UsageRecord.Status.REFUSED:
        return  # neither reached a provider: no latency, no routing
    row[i["latency_count"]] += 1
    row[i["latency_ms_sum"]] += latency
    row[_LAT0 + bisect_left(LATENCY_BOUNDS_MS, latency)] += 1
    if status == UsageRecord.Status.OK and not unpriced:
        usage = Usage(input_tokens, output_tokens, cached_tokens, cache_write_tokens)
        row[i["routing_saved_units"]] += book.routing_saved_units(
            requested=requested, served=served, usage=usage, cost_usd=Decimal(cost_usd)
        )


def _upsert(sums: dict[Key, list[int]]) -> None:
    if not sums:
        return
    table = HourlyRollup._meta.db_table
    columns = [*KEY_FIELDS, *COUNTER_FIELDS]
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTER_FIELDS)
    adapt = connection.ops.adapt_datetimefield_value
    items = sorted(sums.items())
    with connection.cursor() as cursor:
        for batch in _chunks(items, UPSERT_BATCH):
            row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
            params: list = []
            for (hour, *rest), counters in batch:
                params.extend([adapt(hour), *rest, *counters])
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES {', '.join([row_sql] * len(batch))} "
                f"ON CONFLICT ({', '.join(KEY_FIELDS)}) DO UPDATE SET {updates}",
                params,
            )


def _lock(*, shared: bool) -> None:
    if connection.vendor != "postgresql":
        return
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {fn}(%s)", [ROLLUP_LOCK_ID])


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


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
