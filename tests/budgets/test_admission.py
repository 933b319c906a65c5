"""A request's admission in one script: rate limits, then the cache, then the reservation.

In that order: a refused rate limit looks at nothing else, a cache hit reserves nothing, and
a budget refusal after a cache miss says what it says for a request that is not cached.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgets.keys import budget_keys
from budgets.ratelimit import rate_check
from gateway.admission import queue_admission
from gateway.errors import BudgetExceeded, RateLimited
from gateway.money import usd_to_units
from gateway.redisurl import team_tag
from gateway.roundtrip import RoundTrip
from tests.budgets import steps
from tests.budgets.conftest import arun, pin_clock, team_snap
from tests.budgets.test_ratelimit import key_snap
from tests.factories import make_budget, make_team

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
DAY = "2026-11-27"


def cache_key(team) -> str:
    """A cache entry in the team's scope (on Redis Cluster, in its slot)."""
    return f"gw:cache:{team_tag(team.id)}test"


def U(usd: str) -> int:
    return usd_to_units(Decimal(usd))


@pytest.fixture
def team():
    team = make_team("acme", timezone="UTC", rpm_limit=2)
    budget = make_budget(team, daily_limit_usd="1", alert_thresholds=[])
    return team_snap(team.id), budget


def admit(team, units, *, request_id="r1", cached=True, key=None):
    async def run(redis):
        trip = RoundTrip(redis)
        rate = rate_check(key=key, team=team, tokens=10) if key else None
        admission = queue_admission(
            trip,
            rate=rate,
            cache_key=cache_key(team) if cached else None,
            team=team,
            budgets=list(team.budgets),
            request_id=request_id,
            units=units,
            now=NOW,
        )
        reply = (await trip.send())[admission.index]
        return admission, admission.cache_checked(reply), admission.outcome(reply)

    return arun(run)


def reserved(redis_sync, budget) -> int:
    return int(redis_sync.get(budget_keys(budget.team_id, budget.id, DAY).reserved) or 0)


def test_a_miss_holds_the_worst_case_on_every_window(team, redis_sync):
    snap, budget = team
    admission, checked, hit = admit(snap, U("0.1"))
    assert (checked, hit) == (True, None)
    assert reserved(redis_sync, budget) == U("0.1")
    arun(steps.settle, reservation=admission.reservation, actual_units=U("0.04"))
    assert reserved(redis_sync, budget) == 0
    assert int(redis_sync.get(budget_keys(budget.team_id, budget.id, DAY).spent)) == U("0.04")


def test_a_hit_returns_the_answer_and_reserves_nothing(team, redis_sync):
    snap, budget = team
    redis_sync.set(cache_key(snap), b"the cached answer")
    _, checked, hit = admit(snap, U("0.1"))
    assert (checked, hit) == (True, b"the cached answer")
    assert reserved(redis_sync, budget) == 0


def test_a_hit_is_served_even_when_the_budget_is_spent(team, redis_sync):
    snap, budget = team
    redis_sync.set(cache_key(snap), b"free")
    assert admit(snap, U("5"))[2] == b"free"  # a hit costs nothing: no budget check


def test_a_rate_limited_request_looks_at_nothing_else(team, redis_sync):
    snap, budget = team
    key = key_snap(make_team("other"))  # no limits of its own: the team's rpm of 2 applies
    redis_sync.set(cache_key(snap), b"would be a hit")
    admit(snap, U("0.1"), request_id="a", cached=False, key=key)
    admit(snap, U("0.1"), request_id="b", cached=False, key=key)
    held = reserved(redis_sync, budget)
    with pytest.raises(RateLimited) as refused:
        admit(snap, U("0.1"), request_id="c", key=key)
    assert "2 requests per minute" in refused.value.message
    assert reserved(redis_sync, budget) == held  # nothing reserved for the refused one


def test_a_budget_refusal_after_a_miss_says_what_it_says_uncached(team, redis_sync):
    snap, budget = team
    admit(snap, U("0.75"), request_id="a", cached=False)
    with pytest.raises(BudgetExceeded) as by_admission:
        admit(snap, U("0.5"), request_id="b")  # a cache miss, then the hold
    with pytest.raises(BudgetExceeded) as by_reserve:
        arun(
            steps.reserve,  # no cache key
            team=snap,
            budgets=list(snap.budgets),
            request_id="c",
            units=U("0.5"),
            now=NOW,
        )
    assert by_admission.value.message == by_reserve.value.message
    assert by_admission.value.headers == by_reserve.value.headers
    assert "$0.75 reserved" in by_admission.value.message
    assert reserved(redis_sync, budget) == U("0.75")
