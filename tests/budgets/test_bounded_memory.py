"""A budget window's Redis structures follow the requests in flight, not the request rate
(issue 23): a settle drops its hold from `holds` and `expiries` and leaves a per-request
marker with its own short lifetime, so thousands of reserve+settle cycles leave the window as
small as the number in flight, while a repeated settle still adds nothing.

Driven through the production path: the admission script (gateway/admission.py) and the spend
script queued by budgets.services.queue_spend, each on a RoundTrip.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from budgets import services
from budgets.keys import budget_keys
from gateway import runtime
from gateway.admission import queue_admission
from gateway.money import usd_to_units
from gateway.roundtrip import RoundTrip
from tests.budgets.conftest import pin_clock, team_snap
from tests.factories import make_budget, make_team

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
DAY, MONTH = "2026-11-27", "2026-11"
CYCLES = 3000
IN_FLIGHT = 40
UNIT = usd_to_units(Decimal("0.0001"))


@pytest.fixture
def team():
    team = make_team("busy", timezone="UTC")
    budget = make_budget(team, daily_limit_usd="1000", alert_thresholds=[])
    return team_snap(team.id), budget


def _window_sizes(redis, budget) -> list[int]:
    sizes = []
    for window in (DAY, MONTH):
        k = budget_keys(budget.team_id, budget.id, window)
        sizes += [redis.hlen(k.holds), redis.zcard(k.expiries)]
    return sizes


def test_thousands_of_cycles_keep_a_window_as_small_as_the_requests_in_flight(team):
    snap, budget = team
    redis = runtime.sync_redis()

    async def run():
        aredis = runtime.aredis()
        open_ = deque()
        largest = 0
        try:
            for i in range(CYCLES):
                trip = RoundTrip(aredis)
                admission = queue_admission(
                    trip,
                    rate=None,
                    cache_key=None,
                    team=snap,
                    budgets=list(snap.budgets),
                    request_id=f"r{i}",
                    units=2 * UNIT,
                    now=NOW,
                )
                settling = None
                if len(open_) == IN_FLIGHT:  # the oldest request ends as this one starts
                    settling = open_.popleft()
                    queue_settle(trip, settling)
                replies = await trip.send()
                assert admission.outcome(replies[admission.index]) is None
                open_.append(admission.reservation)
                if i % 250 == 0:
                    largest = max(largest, *_window_sizes(redis, budget))
            while open_:
                trip = RoundTrip(aredis)
                queue_settle(trip, open_.popleft())
                await trip.send()
        finally:
            await runtime.close_loop_clients()
        return largest

    def queue_settle(trip, reservation):
        services.queue_spend(
            trip, slots=reservation.slots, request_id=reservation.request_id, units=UNIT
        )

    largest = async_to_sync(run)()
    # Bounded by the requests in flight (IN_FLIGHT plus the one being admitted), however
    # many went through: before issue 23 each window kept every settled request for
    # RESERVATION_TTL_S as a tombstone (here: CYCLES entries in each structure).
    assert 0 < largest <= IN_FLIGHT + 1
    assert _window_sizes(redis, budget) == [0, 0, 0, 0]
    for window in (DAY, MONTH):
        k = budget_keys(budget.team_id, budget.id, window)
        assert int(redis.get(k.spent)) == CYCLES * UNIT  # each settle counted exactly once
        assert int(redis.get(k.reserved) or 0) == 0


def test_a_settle_retried_on_a_new_round_trip_adds_nothing(team):
    """The retried round trip after a lost reply: the hold is gone, the marker answers."""
    snap, budget = team
    redis = runtime.sync_redis()

    async def run():
        aredis = runtime.aredis()
        try:
            trip = RoundTrip(aredis)
            admission = queue_admission(
                trip,
                rate=None,
                cache_key=None,
                team=snap,
                budgets=list(snap.budgets),
                request_id="once",
                units=3 * UNIT,
                now=NOW,
            )
            await trip.send()
            for _ in range(3):
                trip = RoundTrip(aredis)
                services.queue_spend(
                    trip, slots=admission.reservation.slots, request_id="once", units=UNIT
                )
                await trip.send()
        finally:
            await runtime.close_loop_clients()

    async_to_sync(run)()
    k = budget_keys(budget.team_id, budget.id, DAY)
    assert int(redis.get(k.spent)) == UNIT
    assert int(redis.get(k.reserved)) == 0
    assert redis.hlen(k.holds) == 0
    assert 0 < redis.pttl(k.settled("once")) <= services.settled_marker_ttl_ms()
