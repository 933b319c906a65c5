"""The hot path's config copy: one refresh at a time, stale copies served while the
database is slow or away, and a clear 503 when there is no copy at all."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import OperationalError

from gateway import snapshot as snapshots
from gateway.errors import ServiceUnavailable
from gateway.snapshot import store
from tests.factories import make_team

pytestmark = pytest.mark.django_db(transaction=True)


def broken(*args):
    raise OperationalError("the database is away")


async def test_a_first_load_with_the_database_away_is_a_503(monkeypatch):
    monkeypatch.setattr(snapshots, "load_snapshot", broken)
    with pytest.raises(ServiceUnavailable) as caught:
        await store().snapshot()
    assert caught.value.status == 503 and caught.value.code == "config_unavailable"


async def test_a_stale_copy_is_served_while_the_database_is_away(monkeypatch, settings):
    team = await asyncio.to_thread(make_team)
    first = await store().snapshot()
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_TTL_S": 0}
    monkeypatch.setattr(snapshots, "load_snapshot", broken)
    monkeypatch.setattr(snapshots, "refresh_snapshot", broken)  # nothing changed: the usual path
    for _ in range(3):
        assert (await store().snapshot()).teams[team.id].name == team.name
        await asyncio.sleep(0.01)
    assert await store().snapshot() is first


async def test_many_requests_past_the_ttl_start_one_refresh(monkeypatch, settings):
    await asyncio.to_thread(make_team)
    await store().snapshot()
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_TTL_S": 0}
    calls, gate = [], threading.Event()
    real = snapshots.refresh_snapshot  # nothing changed: the refresh reads only the small tables

    def slow_load(*args):
        calls.append(1)
        gate.wait(5)
        return real(*args)

    monkeypatch.setattr(snapshots, "refresh_snapshot", slow_load)
    await asyncio.gather(*(store().snapshot() for _ in range(200)))
    await asyncio.gather(*(store().snapshot() for _ in range(200)))  # still the one refresh
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.01)
    gate.set()
    assert len(calls) == 1
