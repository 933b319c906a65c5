from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from gateway.models import UsageRecord
from gateway.money import units_to_usd
from reports import rollups
from reports.histogram import percentile
from reports.models import COUNTER_FIELDS, LATENCY_FIELDS, CircuitEvent, DailyRollup, HourlyRollup
from reports.tasks import roll_up_recent
from tests.reports.conftest import make_record, write_ledger

pytestmark = pytest.mark.django_db


def random_ledger(world, rng: random.Random, n: int) -> list[UsageRecord]:
    features = [
        (world["acme"], world["acme_chat"]),
        (world["acme"], world["acme_search"]),
        (world["acme"], None),
        (world["globex"], world["globex_chat"]),
    ]
    now = timezone.now()
    records = []
    for _ in range(n):
        team, feature = rng.choice(features)
        records.append(
            make_record(
                team,
                feature,
                created_at=now - dt.timedelta(minutes=rng.randrange(6 * 60)),
                served_model=rng.choice(["small", "large"]),
                requested_model=rng.choice(["auto", "small", "large"]),
                attempts=rng.choice([0, 1, 1, 1, 2, 3]),
                status=rng.choice(["ok"] * 8 + ["error", "refused", "stream_error"]),
                cache=rng.choice(["hit", "miss", "miss", "bypass"]),
                input_tokens=rng.randrange(5000),
                output_tokens=rng.randrange(2000),
                cost_usd=Decimal(rng.randrange(10**8)) / 10**10,
                saved_usd=Decimal(rng.randrange(10**7)) / 10**10,
                latency_ms=rng.randrange(4000),
                estimated=rng.random() < 0.1,
                unpriced=rng.random() < 0.05,
            )
        )
    return records


def ledger_sums(records):
    sums = defaultdict(lambda: [0, 0, 0, Decimal(0), Decimal(0)])
    for r in records:
        cell = sums[(r.team_id, r.feature_id or 0, r.served_model)]
        cell[0] += 1
        cell[1] += r.input_tokens
        cell[2] += r.output_tokens
        cell[3] += r.cost_usd
        cell[4] += r.saved_usd
    return dict(sums)


def rollup_sums():
    rows = HourlyRollup.objects.values("team_id", "feature_key", "served_model").annotate(
        n=Sum("requests"),
        i=Sum("input_tokens"),
        o=Sum("output_tokens"),
        c=Sum("cost_units"),
        s=Sum("saved_units"),
    )
    return {
        (r["team_id"], r["feature_key"], r["served_model"]): [
            r["n"],
            r["i"],
            r["o"],
            units_to_usd(r["c"]),
            units_to_usd(r["s"]),
        ]
        for r in rows
    }


def test_rollups_sum_exactly_to_the_ledger_per_team_feature_and_model(world):
    records = random_ledger(world, random.Random(1), 600)
    for start in range(0, len(records), 70):  # batches, as the drainer writes them
        write_ledger(records[start : start + 70])

    assert rollup_sums() == ledger_sums(records)
    totals = HourlyRollup.objects.aggregate(
        hits=Sum("cache_hits"),
        errors=Sum("errors"),
        refused=Sum("refused"),
        streams=Sum("stream_errors"),
        fallbacks=Sum("fallbacks"),
        unpriced=Sum("unpriced"),
    )
    assert totals == {
        "hits": sum(r.cache == "hit" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "refused": sum(r.status == "refused" for r in records),
        "streams": sum(r.status == "stream_error" for r in records),
        # rescued by a later model; a request that failed on every model is an error only
        "fallbacks": sum(r.attempts > 1 and r.status in ("ok", "stream_error") for r in records),
        "unpriced": sum(r.unpriced for r in records),
    }


def daily_from_hourly():
    sums = defaultdict(lambda: [0] * len(COUNTER_FIELDS))
    for row in HourlyRollup.objects.all():
        key = (row.hour.date(), row.team_id, row.feature_key, row.served_model, row.provider)
        for i, name in enumerate(COUNTER_FIELDS):
            sums[key][i] += getattr(row, name)
    return dict(sums)


def daily_rows():
    return {
        (r.day.date(), r.team_id, r.feature_key, r.served_model, r.provider): [
            getattr(r, name) for name in COUNTER_FIELDS
        ]
        for r in DailyRollup.objects.all()
    }


def test_daily_rollups_are_the_sums_of_the_hourly_ones(world):
    records = random_ledger(world, random.Random(4), 300)
    for record in records[:100]:  # some of yesterday's, across midnight
        record.created_at -= dt.timedelta(hours=20)
    for start in range(0, len(records), 50):
        write_ledger(records[start : start + 50])

    assert daily_rows() == daily_from_hourly()
    assert DailyRollup.objects.aggregate(n=Sum("requests"))["n"] == 300
    assert all(r.day.hour == 0 for r in DailyRollup.objects.all())


def test_a_second_batch_for_the_same_hour_adds_to_the_rollup(world):
    at = timezone.now().replace(minute=30)
    write_ledger([make_record(world["acme"], world["acme_chat"], created_at=at, cost_usd="0.25")])
    write_ledger([make_record(world["acme"], world["acme_chat"], created_at=at, cost_usd="0.5")])

    row = HourlyRollup.objects.get()
    assert (row.requests, units_to_usd(row.cost_units)) == (2, Decimal("0.75"))
    assert row.hour == at.replace(minute=0, second=0, microsecond=0)


def test_rebuild_reproduces_what_the_drainer_rolled_up(world):
    write_ledger(random_ledger(world, random.Random(2), 300))
    columns = [f.attname for f in HourlyRollup._meta.fields if f.name != "id"]
    before, days_before = sorted(HourlyRollup.objects.values_list(*columns)), daily_rows()
    HourlyRollup.objects.update(requests=0, cost_units=12345)  # drift
    DailyRollup.objects.update(requests=0)

    written = rollups.rebuild(timezone.now() - dt.timedelta(hours=8), timezone.now())

    assert written == len(before)
    assert sorted(HourlyRollup.objects.values_list(*columns)) == before
    assert daily_rows() == days_before


def test_roll_up_recent_repairs_the_last_two_hours_only(world):
    now = timezone.now()
    recent = make_record(world["acme"], created_at=now - dt.timedelta(minutes=10), cost_usd="1")
    old = make_record(world["acme"], created_at=now - dt.timedelta(hours=5), cost_usd="2")
    write_ledger([recent, old])
    HourlyRollup.objects.update(cost_units=0)

    roll_up_recent.apply()
    roll_up_recent.apply()  # idempotent

    by_hour = dict(HourlyRollup.objects.values_list("hour", "cost_units"))
    assert by_hour[rollups.floor_hour(recent.created_at)] == 10**10
    assert by_hour[rollups.floor_hour(old.created_at)] == 0  # outside the window: untouched


def test_roll_up_recent_reads_no_ledger_row_while_nothing_drifted(world, monkeypatch):
    now = timezone.now()
    at = [now - dt.timedelta(minutes=5), now - dt.timedelta(minutes=70)]
    write_ledger([make_record(world["acme"], created_at=t, output_tokens=9) for t in at])
    recomputed: list[dt.datetime] = []
    real = rollups._hour_diff

    def counted(hour, book):
        recomputed.append(hour)
        return real(hour, book)

    monkeypatch.setattr(rollups, "_hour_diff", counted)
    assert roll_up_recent.apply().get() == 0 and recomputed == []
    drifted = rollups.floor_hour(at[1])
    HourlyRollup.objects.filter(hour=drifted).update(output_tokens=0)

    assert roll_up_recent.apply().get() == 1
    assert recomputed == [drifted]  # only the hour that differs is read again
    assert HourlyRollup.objects.get(hour=drifted).output_tokens == 9
    assert DailyRollup.objects.aggregate(o=Sum("output_tokens"))["o"] == 18


def test_a_rebuild_drops_what_the_ledger_no_longer_holds_of_a_day_it_holds(world):
    # Not the ledger's oldest day: a day with fewer rows than its roll-ups count there is
    # one `pruneledger` was interrupted in, and it is kept as it is.
    now, earlier = timezone.now(), timezone.now() - dt.timedelta(days=3)
    kept = make_record(world["acme"], created_at=now, cost_usd="1")
    gone = make_record(world["acme"], world["acme_chat"], created_at=now, cost_usd="2")
    write_ledger([make_record(world["acme"], created_at=earlier), kept, gone])
    UsageRecord.objects.filter(pk=gone.pk).delete()  # e.g. a row removed by hand

    assert rollups.rebuild(now - dt.timedelta(hours=1), now) == 1
    hour = HourlyRollup.objects.filter(hour=rollups.floor_hour(now))
    assert list(hour.values_list("feature_key", "cost_units")) == [(0, 10**10)]
    assert DailyRollup.objects.get(day=rollups.floor_day(now)).requests == 1


def test_a_rebuild_keeps_the_roll_ups_of_pruned_days(world):
    now = timezone.now()
    old = now - dt.timedelta(days=40)
    write_ledger([make_record(world["acme"], created_at=t, cost_usd="1") for t in (old, now)])
    UsageRecord.objects.filter(created_at__lt=now - dt.timedelta(days=1)).delete()  # pruned

    rollups.rebuild(old - dt.timedelta(days=1), now)
    assert sorted(DailyRollup.objects.values_list("requests", flat=True)) == [1, 1]
    assert HourlyRollup.objects.filter(hour=rollups.floor_hour(old)).exists()


def test_percentiles_from_the_histogram_are_close_to_the_true_ones(world):
    rng = random.Random(3)
    latencies = [int(rng.lognormvariate(5.8, 0.6)) for _ in range(5000)]
    at = timezone.now() - dt.timedelta(minutes=1)
    write_ledger([make_record(world["acme"], created_at=at, latency_ms=ms) for ms in latencies])
    row = HourlyRollup.objects.get()
    counts = [getattr(row, name) for name in LATENCY_FIELDS]
    ordered = sorted(latencies)

    for q in (0.5, 0.95):
        true = ordered[int(q * len(ordered))]
        assert percentile(counts, q) == pytest.approx(true, rel=0.12)
    assert row.latency_ms_sum == sum(latencies)


def test_cache_hits_and_refusals_stay_out_of_the_latency_histogram(world):
    write_ledger(
        [
            make_record(world["acme"], cache="hit", latency_ms=3),
            make_record(world["acme"], status="refused", latency_ms=1),
            make_record(world["acme"], latency_ms=480),
        ]
    )
    row = HourlyRollup.objects.get()
    assert (row.latency_count, row.latency_ms_sum, row.lat_b7) == (1, 480, 1)


def test_answered_requests_and_cache_hits_keep_their_tokens_apart_for_repricing(world):
    write_ledger(
        [
            make_record(world["acme"], input_tokens=1000, output_tokens=500, cached_tokens=200),
            make_record(world["acme"], input_tokens=30, output_tokens=20, cache="hit"),
            make_record(world["acme"], input_tokens=7, output_tokens=7, unpriced=True),
            make_record(world["acme"], input_tokens=9, output_tokens=9, status="refused"),
        ]
    )
    row = HourlyRollup.objects.get()
    billed = (row.billed_input_tokens, row.billed_output_tokens, row.billed_cached_tokens)
    assert billed == (1000, 500, 200)  # neither the unpriced nor the refused request
    assert (row.hit_input_tokens, row.hit_output_tokens) == (30, 20)


def test_a_fallback_records_its_extra_cost_over_the_routes_first_model(world):
    write_ledger(
        [
            make_record(
                world["acme"],
                requested_model="auto",
                served_model="large",
                attempts=2,
                attempt_log=[{"model": "small", "error": "timeout"}, {"model": "large"}],
                input_tokens=1000,
                output_tokens=500,
                cost_usd="0.025",  # 1000 × $10 + 500 × $30 per Mtok
            )
        ]
    )
    # The route's first model (small: $1 and $2 per Mtok) would have cost $0.002.
    row = HourlyRollup.objects.get()
    assert units_to_usd(row.fallback_extra_units) == Decimal("0.023")
    assert row.fallbacks == 1


def test_circuit_events_are_stored_once_however_often_delivered(db):
    opened = "2026-11-27T10:15:00.250000+00:00"
    events = [{"provider": "sim-openai", "opened_at": opened, "reason": "consecutive_failures"}]
    rollups.record_circuit_events(events)
    rollups.record_circuit_events(events)

    event = CircuitEvent.objects.get()
    assert (event.provider, event.kind, event.reason) == (
        "sim-openai",
        "opened",
        "consecutive_failures",
    )
    assert event.opened_at == dt.datetime(2026, 11, 27, 10, 15, 0, 250000, tzinfo=dt.UTC)


def test_an_empty_batch_writes_nothing(db):
    rollups.apply([])
    assert HourlyRollup.objects.count() == 0
