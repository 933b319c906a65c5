"""Reserve, settle and release: the arithmetic, refusals, soft budgets and crashed holds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync

from budgets import services
from budgets.keys import budget_keys
from budgets.windows import current_windows
from gateway.errors import BudgetExceeded
from gateway.money import usd_to_units
from gateway.roundtrip import RoundTrip
from tests.budgets import steps
from tests.budgets.conftest import arun, pin_clock, team_snap, wide_client
from tests.factories import make_budget, make_feature, make_team
from tests.processes import one_redis_only

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
_clock = pin_clock(NOW)
DAY, MONTH = "2026-11-27", "2026-11"


def U(usd: str) -> int:
    return usd_to_units(Decimal(usd))


def _counters(redis_sync, budget, window_key: str) -> tuple[int, int]:
    keys = budget_keys(budget.team_id, budget.id, window_key)
    return int(redis_sync.get(keys.spent) or 0), int(redis_sync.get(keys.reserved) or 0)


@pytest.fixture
def team_budget():
    team = make_team(timezone="UTC")
    budget = make_budget(team, daily_limit_usd="1", monthly_limit_usd="10", alert_thresholds=[])
    return team_snap(team.id), budget


def _reserve(team, units, request_id="r1", budgets=None, now=NOW):
    return arun(
        steps.reserve,
        team=team,
        budgets=list(budgets or team.budgets),
        request_id=request_id,
        units=units,
        now=now,
    )


def test_it_holds_the_reservation_on_every_window(team_budget, redis_sync):
    team, budget = team_budget
    _reserve(team, U("0.3"))
    assert _counters(redis_sync, budget, DAY) == (0, U("0.3"))
    assert _counters(redis_sync, budget, MONTH) == (0, U("0.3"))


def test_it_settles_the_actual_cost_and_drops_the_hold(team_budget, redis_sync):
    team, budget = team_budget
    reservation = _reserve(team, U("0.3"))
    arun(steps.settle, reservation=reservation, actual_units=U("0.12"))
    assert _counters(redis_sync, budget, DAY) == (U("0.12"), 0)
    assert _counters(redis_sync, budget, MONTH) == (U("0.12"), 0)
    # No tombstone in the window's structures: they hold the requests in flight only.
    assert redis_sync.hgetall(budget_keys(budget.team_id, budget.id, DAY).holds) == {}
    assert redis_sync.zcard(budget_keys(budget.team_id, budget.id, DAY).expiries) == 0
    assert redis_sync.pttl(budget_keys(budget.team_id, budget.id, DAY).settled("r1")) > 0


def test_a_repeated_settle_adds_the_cost_once(team_budget, redis_sync):
    team, budget = team_budget
    reservation = _reserve(team, U("0.3"))
    for _ in range(2):  # e.g. the client retried after losing the first reply
        arun(steps.settle, reservation=reservation, actual_units=U("0.12"))
    assert _counters(redis_sync, budget, DAY) == (U("0.12"), 0)


def test_a_late_settle_after_the_hold_expired_is_a_plain_spend(team_budget, redis_sync, settings):
    """As before the settled marker: a hold that expired (its process seemed dead) is gone,
    and the settle that comes anyway counts its spend once, even when repeated."""
    settings.GATEWAY = {**settings.GATEWAY, "RESERVATION_TTL_S": 0.2}
    team, budget = team_budget
    reservation = _reserve(team, U("0.3"))
    time.sleep(0.3)
    for _ in range(2):
        arun(steps.settle, reservation=reservation, actual_units=U("0.12"))
    assert _counters(redis_sync, budget, DAY) == (U("0.12"), 0)


def test_a_settled_reservation_leaves_no_trace_once_expired(team_budget, redis_sync, settings):
    settings.GATEWAY = {**settings.GATEWAY, "RESERVATION_TTL_S": 0.2}
    team, budget = team_budget
    arun(steps.settle, reservation=_reserve(team, U("0.3"), "a"), actual_units=U("0.1"))
    time.sleep(0.3)
    _reserve(team, U("0.2"), "b")
    assert _counters(redis_sync, budget, DAY) == (U("0.1"), U("0.2"))
    assert redis_sync.hkeys(budget_keys(budget.team_id, budget.id, DAY).holds) == [b"b"]


def test_it_releases_everything_on_failure(team_budget, redis_sync):
    team, budget = team_budget
    reservation = _reserve(team, U("0.3"))
    arun(services.release, reservation=reservation)
    assert _counters(redis_sync, budget, DAY) == (0, 0)
    assert redis_sync.zcard(budget_keys(budget.team_id, budget.id, DAY).expiries) == 0


def test_it_counts_a_retried_reservation_once(team_budget, redis_sync):
    team, budget = team_budget
    _reserve(team, U("0.3"))
    _reserve(team, U("0.3"))
    assert _counters(redis_sync, budget, DAY) == (0, U("0.3"))


def test_it_refuses_when_spent_plus_reserved_would_pass_the_limit(team_budget, redis_sync):
    team, budget = team_budget
    arun(steps.settle, reservation=_reserve(team, U("0.5"), "a"), actual_units=U("0.5"))
    _reserve(team, U("0.25"), "b")
    with pytest.raises(BudgetExceeded) as refused:
        _reserve(team, U("0.26"), "c")
    err = refused.value
    assert err.status == 429
    assert err.code == "budget_exceeded"
    assert err.headers == {"Retry-After": str(8 * 3600 + 30 * 60), "x-should-retry": "false"}
    assert err.message == (
        'Budget exceeded: the daily team budget of "acme" (2026-11-27) has spent $0.5'
        " (plus $0.25 reserved by requests in flight) of its $1 limit, and this request needs"
        " up to $0.26. It resets at 2026-11-28T00:00:00+00:00."
    )
    assert err.body()["error"]["type"] == "insufficient_quota"
    assert _counters(redis_sync, budget, DAY) == (U("0.5"), U("0.25"))
    assert _counters(redis_sync, budget, MONTH) == (U("0.5"), U("0.25"))


def test_it_allows_a_reservation_that_exactly_reaches_the_limit(team_budget, redis_sync):
    team, budget = team_budget
    _reserve(team, U("1"))
    assert _counters(redis_sync, budget, DAY) == (0, U("1"))


def test_it_refuses_on_the_monthly_window_and_names_it(redis_sync):
    team = make_team(timezone="UTC")
    feature = make_feature(team, "search")
    budget = make_budget(team, feature, monthly_limit_usd="2", alert_thresholds=[])
    snap = team_snap(team.id)
    arun(steps.record_spend, team=snap, budgets=list(snap.budgets), units=U("1.5"), now=NOW)
    with pytest.raises(BudgetExceeded) as refused:
        _reserve(snap, U("0.6"))
    assert 'monthly feature budget of "acme/search" (2026-11)' in refused.value.message
    assert refused.value.headers["Retry-After"] == str(3 * 86400 + 8 * 3600 + 30 * 60)
    assert _counters(redis_sync, budget, MONTH) == (U("1.5"), 0)


def test_soft_budgets_never_block_but_count_spend(redis_sync):
    team = make_team()
    budget = make_budget(team, daily_limit_usd="1", hard=False, alert_thresholds=[])
    snap = team_snap(team.id)
    for i in range(3):
        reservation = _reserve(snap, U("0.8"), f"r{i}")
        arun(steps.settle, reservation=reservation, actual_units=U("0.8"))
    assert _counters(redis_sync, budget, DAY) == (U("2.4"), 0)


def test_windows_follow_the_team_time_zone(redis_sync):
    team = make_team(timezone="Asia/Tokyo")  # 15:30 UTC is 00:30 the next day in Tokyo
    budget = make_budget(team, daily_limit_usd="1", alert_thresholds=[])
    snap = team_snap(team.id)
    with pytest.raises(BudgetExceeded) as refused:
        _reserve(snap, U("2"))
    assert "(2026-11-28)" in refused.value.message
    assert refused.value.headers["Retry-After"] == str(23 * 3600 + 30 * 60)
    _reserve(snap, U("1"))
    assert _counters(redis_sync, budget, "2026-11-28") == (0, U("1"))


def test_a_crashed_reservation_expires_on_its_own(team_budget, redis_sync, settings):
    # Long enough that the refusal below comes well before the expiry on a loaded machine
    # (0.3 s was once not enough for two calls in a row).
    settings.GATEWAY = {**settings.GATEWAY, "RESERVATION_TTL_S": 1.5}
    team, budget = team_budget
    _reserve(team, U("1"), "crashed")  # its process dies: never settled nor released
    with pytest.raises(BudgetExceeded):
        _reserve(team, U("0.1"), "next")
    time.sleep(1.6)
    _reserve(team, U("0.1"), "next")
    assert _counters(redis_sync, budget, DAY) == (0, U("0.1"))
    assert redis_sync.hkeys(budget_keys(budget.team_id, budget.id, DAY).holds) == [b"next"]


def test_settling_an_expired_reservation_still_adds_the_cost(team_budget, redis_sync, settings):
    settings.GATEWAY = {**settings.GATEWAY, "RESERVATION_TTL_S": 0.2}
    team, budget = team_budget
    reservation = _reserve(team, U("0.5"))
    time.sleep(0.3)
    arun(steps.settle, reservation=reservation, actual_units=U("0.4"))
    assert _counters(redis_sync, budget, DAY) == (U("0.4"), 0)


def test_no_budget_costs_no_redis_round_trip(team_budget):
    team, _ = team_budget

    class NoRedis:
        def __getattr__(self, name):
            raise AssertionError(f"Redis used: {name}")

    async def run():
        reservation, keys, _ = services.hold_script_args(
            budgets=[], request_id="r", units=5, now=NOW
        )
        assert keys == []  # the admission script holds nothing
        trip = RoundTrip(NoRedis())
        assert services.queue_spend(trip, slots=(), request_id="r", units=5) is None
        assert await trip.send() == []  # nothing queued, nothing sent
        await services.release(redis=NoRedis(), reservation=reservation)
        return reservation

    assert asyncio.run(run()).slots == ()


@one_redis_only
def test_concurrent_reservations_in_one_process_never_overspend(redis_sync):
    team = make_team()
    budget = make_budget(team, daily_limit_usd="0.5", alert_thresholds=[])
    snap = team_snap(team.id)
    cost = U("0.01")  # the limit allows 50

    async def one(i, redis):
        try:
            reservation = await steps.reserve(
                redis=redis, team=snap, budgets=list(snap.budgets), request_id=f"r{i}", units=cost
            )
        except BudgetExceeded:
            return 0
        await asyncio.sleep(0.001 * (i % 7))
        await steps.settle(redis=redis, reservation=reservation, actual_units=cost)
        return 1

    async def burst():
        async with wide_client() as redis:
            return sum(await asyncio.gather(*(one(i, redis) for i in range(200))))

    served = async_to_sync(burst)()
    day_key = services.slots_for(list(snap.budgets))[0].window.key
    assert served == 50
    assert _counters(redis_sync, budget, day_key) == (U("0.5"), 0)


def test_windows_are_right_on_either_side_of_midnight_whatever_was_asked_before():
    """current_windows keeps the last windows per time zone: a time outside them (the next
    day, an earlier day, a DST night) computes its own, and a zone never gets another's."""
    paris_midnight = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 on 29 March in Paris
    asked = [
        ("Europe/Paris", paris_midnight - timedelta(microseconds=1), "2026-03-28"),
        ("Europe/Paris", paris_midnight, "2026-03-29"),
        ("Europe/Paris", paris_midnight - timedelta(hours=1), "2026-03-28"),
        ("UTC", paris_midnight, "2026-03-28"),
        ("Europe/Paris", datetime(2026, 3, 29, 21, 59, tzinfo=UTC), "2026-03-29"),  # 23 h day
        ("Europe/Paris", datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "2026-03-30"),
        ("Europe/Paris", datetime(2026, 2, 28, 23, 0, tzinfo=UTC), "2026-03-01"),
    ]
    for tz, now, day in asked * 2:
        daily, monthly = current_windows(tz, now)
        assert (daily.key, monthly.key) == (day, day[:7])
        assert daily.start <= now < daily.end
        assert monthly.start <= now < monthly.end
