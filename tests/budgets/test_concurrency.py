"""The guarantee: concurrent requests from several processes never spend past a hard budget."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from decimal import Decimal

import pytest
from django.conf import settings
from redis.asyncio import Redis

from budgets import services
from budgets.keys import budget_keys
from gateway import redisurl
from gateway.admission import queue_admission
from gateway.errors import BudgetExceeded
from gateway.money import usd_to_units
from gateway.redisurl import team_tag
from gateway.roundtrip import RoundTrip
from gateway.runtime import async_from_url
from gateway.snapshot import TeamSnap
from tests.budgets import steps
from tests.budgets.conftest import team_snap
from tests.factories import make_budget, make_team
from tests.processes import (
    requires_real_redis,
    requires_redis_server,
)

COST = usd_to_units(Decimal("0.01"))  # the worst case reserved by every request
PROCESSES, PER_PROCESS = 4, 50


async def _hold(redis: Redis, team: TeamSnap, request_id: str, via: str):
    """The worst case held by the pipeline's admission script, with no cache key (a
    request that is not cached) or with one (a cache miss)."""
    trip = RoundTrip(redis)
    admission = queue_admission(
        trip,
        rate=None,
        cache_key=None if via == "no-cache" else f"gw:cache:{team_tag(team.id)}{request_id}",
        team=team,
        budgets=list(team.budgets),
        request_id=request_id,
        units=COST,
    )
    assert admission.outcome((await trip.send())[admission.index]) is None
    return admission.reservation


def _burst(redis_url: str, team: TeamSnap, worker: int, via: str) -> tuple[int, int]:
    """One process: PER_PROCESS concurrent requests on its own loop and Redis client.

    Each reserves the worst case, "calls the provider" for a few ms, then settles an actual
    cost between half and all of it. Returns (requests served, units settled).
    """
    rng = random.Random(worker)

    async def one(redis: Redis, i: int) -> int | None:
        try:
            reservation = await _hold(redis, team, f"w{worker}-{i}", via)
        except BudgetExceeded:
            return None
        await asyncio.sleep(rng.uniform(0, 0.01))
        actual = rng.randint(COST // 2, COST)
        await steps.settle(redis=redis, reservation=reservation, actual_units=actual)
        return actual

    async def main() -> list[int | None]:
        # A plain URL, a Sentinel one (the primary, looked up through the sentinels) or a
        # cluster's (each team's keys on the node that owns its slot).
        async with async_from_url(redis_url, max_connections=PER_PROCESS) as redis:
            return await asyncio.gather(*(one(redis, i) for i in range(PER_PROCESS)))

    settled = [units for units in asyncio.run(main()) if units is not None]
    return len(settled), sum(settled)


def _spend_200(redis_url: str, redis_sync, via: str) -> None:
    """4 processes × 50 concurrent requests against a budget that fits about 50."""
    team = make_team()
    budget = make_budget(team, daily_limit_usd="0.5", alert_thresholds=[])  # ~50 requests
    snap = team_snap(team.id)
    with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
        results = pool.starmap(_burst, [(redis_url, snap, w, via) for w in range(PROCESSES)])

    served = sum(n for n, _ in results)
    settled = sum(units for _, units in results)
    keys = budget_keys(
        budget.team_id, budget.id, services.slots_for(list(snap.budgets))[0].window.key
    )
    spent, reserved = int(redis_sync.get(keys.spent)), int(redis_sync.get(keys.reserved))
    assert spent == settled
    assert spent <= usd_to_units(Decimal("0.5"))
    assert reserved == 0
    assert 50 <= served < PROCESSES * PER_PROCESS  # every request fits until the last 1 cent


@pytest.mark.slow
@requires_real_redis
@pytest.mark.django_db
@pytest.mark.parametrize("via", ["no-cache", "cache-miss"])
def test_200_requests_from_4_processes_never_spend_past_the_limit(redis_sync, via):
    _spend_200(settings.REDIS_URL, redis_sync, via)


@pytest.mark.slow
@requires_redis_server
@pytest.mark.django_db
def test_the_same_200_requests_through_sentinel_never_spend_past_the_limit(sentinels):
    """Issue 23: the guarantee on a primary found through three sentinels."""
    _spend_200(sentinels.url, sentinels.primary.client(), "cache-miss")


@pytest.mark.slow
@requires_redis_server
@pytest.mark.django_db
def test_the_same_200_requests_on_a_redis_cluster_never_spend_past_the_limit(
    redis_cluster, monkeypatch
):
    """Issue 23: the guarantee on a 3-primary cluster, the keys named as a process whose
    REDIS_URL is `redis+cluster://` names them (the forked workers inherit it)."""
    monkeypatch.setattr(redisurl, "CLUSTER", True)
    _spend_200(redis_cluster.url, redis_cluster.client(), "cache-miss")
