"""A request's budget and rate-limit steps, each taken on a `RoundTrip` exactly as the
pipeline takes it, for tests that drive the counters one step at a time.

Nothing here is a second implementation: `reserve` and `check_rate_limits` are
gateway/admission.py's `queue_admission` (the admission script) with no cache key, read with
`Admission.outcome`, as `admit` reads it; `settle` and `record_spend` are
budgets/services.py's `queue_spend` then `after_spend`, as gateway/services.py's `finish`
runs them. Releasing is `budgets.services.release`, which `fail` calls.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.utils import timezone

from budgets import services
from budgets.ratelimit import rate_check
from gateway.admission import queue_admission
from gateway.roundtrip import RoundTrip
from gateway.snapshot import BudgetSnap, KeySnap, TeamSnap


async def reserve(
    *,
    redis,
    team: TeamSnap,
    budgets: list[BudgetSnap],
    request_id: str,
    units: int,
    now: datetime | None = None,
) -> services.Reservation:
    """Hold `units` on every budget window (the admission script, no rate limit, no cache),
    or raise BudgetExceeded."""
    trip = RoundTrip(redis)
    admission = queue_admission(
        trip,
        rate=None,
        cache_key=None,
        team=team,
        budgets=budgets,
        request_id=request_id,
        units=units,
        now=now,
    )
    assert admission.outcome((await trip.send())[admission.index]) is None
    return admission.reservation


async def check_rate_limits(*, redis, key: KeySnap, team: TeamSnap, tokens: int) -> None:
    """Take from the request's rate buckets (the admission script, no cache, no budget), or
    raise RateLimited."""
    trip = RoundTrip(redis)
    admission = queue_admission(
        trip,
        rate=rate_check(key=key, team=team, tokens=tokens),
        cache_key=None,
        team=team,
        budgets=[],
        request_id="",
        units=0,
    )
    admission.outcome((await trip.send())[admission.index])


async def spend(*, redis, slots: tuple[services.Slot, ...], request_id: str, units: int) -> None:
    """The spend script and its alerts, as `finish` runs them."""
    trip = RoundTrip(redis)
    index = services.queue_spend(trip, slots=slots, request_id=request_id, units=units)
    replies = await trip.send()
    if index is not None:
        await services.after_spend(redis=redis, slots=slots, claimed=replies[index])


async def settle(*, redis, reservation: services.Reservation, actual_units: int) -> None:
    """Turn the reservation into spend of `actual_units`."""
    await spend(
        redis=redis, slots=reservation.slots, request_id=reservation.request_id, units=actual_units
    )


async def record_spend(
    *,
    redis,
    team: TeamSnap,
    budgets: list[BudgetSnap],
    units: int,
    now: datetime | None = None,
) -> None:
    """Spend with nothing reserved (what `finish` does when admission failed open), under
    a request id of its own."""
    slots = services.slots_for(budgets, now or timezone.now())
    await spend(redis=redis, slots=slots, request_id=uuid.uuid4().hex, units=units)
