"""Concurrent drainers against a real PostgreSQL: no increment is lost, nothing deadlocks."""

from __future__ import annotations

import datetime as dt
import threading

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
