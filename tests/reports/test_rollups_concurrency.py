"""Concurrent drainers against a real PostgreSQL: no increment is lost, nothing deadlocks."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum
from django.utils import timezone

from gateway.models import UsageRecord
from reports import rollups
from reports.models import DailyRollup, HourlyRollup
from tests.reports.conftest import make_record

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locking"),
]

DRAINERS, BATCHES, BATCH = 8, 10, 25


def test_concurrent_drainers_and_a_rebuild_lose_no_increment(world):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    features = [world["acme_chat"], world["acme_search"], None]
    errors: list[BaseException] = []
    barrier = threading.Barrier(DRAINERS + 1)

    def drainer(n: int) -> None:
        try:
            barrier.wait()
            for b in range(BATCHES):
                # The same few keys in every batch, in different orders: worst case for locks.
                batch = [
                    make_record(
                        world["acme"],
                        features[(n + b + i) % 3],
                        created_at=hour + dt.timedelta(minutes=i % 50),
                        cost_usd="0.001",
                    )
                    for i in range(BATCH)
                ]
                with transaction.atomic():
                    UsageRecord.objects.bulk_create(batch)
                    rollups.apply(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def rebuilder() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                rollups.rebuild(hour, hour + dt.timedelta(hours=1))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drainer, args=(n,)) for n in range(DRAINERS)]
    threads.append(threading.Thread(target=rebuilder))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    expected = DRAINERS * BATCHES * BATCH
    totals = HourlyRollup.objects.aggregate(n=Sum("requests"), c=Sum("cost_units"))
    assert UsageRecord.objects.count() == expected
    assert totals == {"n": expected, "c": expected * 10**7}
    daily = DailyRollup.objects.aggregate(n=Sum("requests"), c=Sum("cost_units"))
    assert daily == totals


def test_a_repair_neither_stalls_a_drain_nor_counts_its_records_twice(world, monkeypatch):
    """The repair reads its snapshot, then a drain commits while that snapshot is still
    open: the drain does not wait for the repair (it used to wait for its exclusive lock),
    and the difference the repair adds afterwards covers only the drift it saw."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)

    def drain(n: int) -> None:
        batch = [
            make_record(world["acme"], created_at=hour + dt.timedelta(minutes=i), cost_usd="0.01")
            for i in range(n)
        ]
        with transaction.atomic():
            UsageRecord.objects.bulk_create(batch)
            rollups.apply(batch)

    drain(10)
    HourlyRollup.objects.update(cost_units=0)  # the drift to repair
    read, drained = threading.Event(), threading.Event()
    real = rollups._hour_diff

    def read_then_wait(at, book):
        diff = real(at, book)
        read.set()
        drained.wait(10)  # the snapshot stays open while the drain commits
        return diff

    monkeypatch.setattr(rollups, "_hour_diff", read_then_wait)
    errors: list[BaseException] = []

    def repairer() -> None:
        try:
            rollups.rebuild(hour, hour + dt.timedelta(hours=1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=repairer)
    thread.start()
    assert read.wait(10)
    started = time.monotonic()
    drain(5)
    took = time.monotonic() - started
    drained.set()
    thread.join(30)

    assert errors == [] and took < 2
    totals = HourlyRollup.objects.aggregate(n=Sum("requests"), c=Sum("cost_units"))
    assert totals == {"n": 15, "c": 15 * 10**8}
    assert DailyRollup.objects.aggregate(n=Sum("requests"), c=Sum("cost_units")) == totals
