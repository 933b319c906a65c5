"""Admission: the one module that owns a request's way past the rate limits, the cache and
the budget hold, as ONE atomic Redis script (ADMIT) on ONE round trip.

The script runs, in this order: the rate-limit buckets (APPROXIMATE, see budgets/lua.py),
the cache lookup (a hit is served and reserves nothing), then the budget hold (EXACT). Its
building blocks (PRELUDE, TAKE_TOKENS, HOLD) are the budgets app's, and this script is the
only one that takes rate tokens or holds budget: the spend and release scripts
(budgets/lua.py) read the holds it leaves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone
from redis.exceptions import RedisError

from budgets import lua, ratelimit
from budgets import services as _budgets
from budgets.ratelimit import RateCheck
from gateway import cache, circuit, inflight, runtime
from gateway.errors import ServiceUnavailable
from gateway.money import worst_case_units
from gateway.roundtrip import RoundTrip
from gateway.snapshot import BudgetSnap, TeamSnap

if TYPE_CHECKING:
    from gateway.services import Call

log = logging.getLogger(__name__)

# A request's admission in one round trip, in the order the pipeline needs: the rate limits,
# then the cache (a hit is served and reserves nothing), then the budget reservation.
# KEYS: the rate buckets (ARGV[1] of them), the cache key when ARGV[2] is '1', then 4 per
#       budget window.
# ARGV: n buckets, '1' (look the cache key up) / '0' (no cache) / '2' (a hit found by a
#       lookup of its own: a shared entry on Redis Cluster), capacity and cost per bucket,
#       the buckets' TTL ms, then the request id, units, reservation TTL ms and one limit
#       per budget window.
# Returns {'rate', i, ms}, {'hit', answer}, {'budget', i, spent, reserved} or {'ok'}.
ADMIT = (
    lua.PRELUDE
    + lua.TAKE_TOKENS
    + lua.HOLD
    + """
local nb, k, a = tonumber(ARGV[1]), 1, 3
if nb > 0 then
  local r = take_tokens(slice(KEYS, 1, nb), slice(ARGV, a, a + 2 * nb - 1), ARGV[a + 2 * nb])
  if r[1] ~= 0 then
    return {'rate', r[1], r[2]}
  end
end
k, a = nb + 1, a + 2 * nb + 1
if ARGV[2] == '2' then
  return {'hit', ''}
end
if ARGV[2] == '1' then
  local answer = redis.call('GET', KEYS[k])
  if answer then
    return {'hit', answer}
  end
  k = k + 1
end
local r = hold(slice(KEYS, k, #KEYS), ARGV[a], ARGV[a + 1], ARGV[a + 2], slice(ARGV, a + 3, #ARGV))
if r[1] ~= 0 then
  return {'budget', r[1], r[2], r[3]}
end
return {'ok'}
"""
)


@dataclass(frozen=True, slots=True)
class Admission:
    """Rate limits, cache lookup and reservation as one script on a round trip (ADMIT):
    atomic, in that order, and a cache hit reserves nothing. Read the script's reply with
    `outcome`."""

    index: int
    rate: RateCheck | None
    team: TeamSnap
    reservation: _budgets.Reservation
    now: datetime
    found: bytes | None = None  # the hit of a lookup of its own (`queue_admission`)

    def cache_checked(self, reply) -> bool:
        """Whether the script got as far as the cache (it stops at a rate limit)."""
        return reply[0] != b"rate"

    def outcome(self, reply) -> bytes | None:
        """The cached answer on a hit, else None (the reservation is held). Raises
        RateLimited or BudgetExceeded."""
        verdict = reply[0]
        if verdict == b"hit":
            return self.found or reply[1]
        if verdict == b"rate":
            refusal = self.rate.refusal(reply[1:]) if self.rate else None
            assert refusal is not None  # the script refuses on a rate only when given some
            raise refusal
        if verdict == b"budget":
            raise _budgets.refused(
                team=self.team, reservation=self.reservation, reply=reply[1:], now=self.now
            )
        return None


def queue_admission(
    trip: RoundTrip,
    *,
    rate: RateCheck | None,
    cache_key: str | None,
    team: TeamSnap,
    budgets: list[BudgetSnap],
    request_id: str,
    units: int,
    now: datetime | None = None,
    found: bytes | None = None,
) -> Admission:
    """Queue a request's admission (see `Admission`). With no rate check and no cache key it
    is a reservation alone. `found`: the answer a lookup of its own found for `cache_key`
    (which then stays out of the script): served once the rate limits pass."""
    now = now or timezone.now()
    reservation, hold_keys, hold_args = _budgets.hold_script_args(
        budgets=budgets, request_id=request_id, units=units, now=now
    )
    keys = rate.keys() if rate else []
    lookup = 2 if found is not None else 1 if cache_key else 0
    args: list[str | int] = [len(keys), lookup, *(rate.args() if rate else [0])]
    if lookup == 1 and cache_key:
        keys.append(cache_key)
    index = trip.script(ADMIT, keys + hold_keys, args + hold_args)
    return Admission(index, rate, team, reservation, now, found)


async def admit(call: Call) -> cache.CachedAnswer | None:
    """Rate limits, then the cache, then the budget reservation. Returns a cached answer, if any.

    One Redis round trip: the admission script (ADMIT, read by `Admission`), the in-flight
    registration and the first provider's circuit state. On Redis Cluster a team in the
    shared cache scope looks its entry up on a round trip of its own first.
    """
    redis = runtime.aredis()
    key, team, operation = call.key, call.team, call.operation
    assert key and team and operation  # prepared: authenticated and parsed
    try:
        trip = RoundTrip(redis)
        units = worst_case_units(
            input_tokens=operation.input_upper_bound(call),
            output_tokens=call.max_output,
            # A fallback the price ceiling skips can never spend: nothing held for it.
            prices=[
                m.prices
                for i, m in enumerate(call.chain)
                if not i or m.name not in call.ceiling_skips
            ],
        )
        cache_key, found = call.cache_key, None
        if cache_key and cache.outside_team_slot(cache_key):
            lookup = RoundTrip(redis)
            index = lookup.add("GET", cache_key)
            found, cache_key = (await lookup.send())[index], None
        admission = queue_admission(
            trip,
            rate=ratelimit.rate_check(
                key=key, team=team, tokens=call.prompt_tokens + call.max_output
            ),
            cache_key=cache_key,
            found=found,
            team=team,
            budgets=call.budgets,
            request_id=call.request_id,
            units=units,
        )
        # In flight until its record is written (a refusal or a cache hit writes one at
        # once); a process that dies first leaves it for the lost-request sweep.
        inflight.queue_register(trip, call, units)
        first = call.chain[0].provider.name
        circuit_reply = circuit.queue_read(trip, first)
        try:
            replies = await trip.send()
        except asyncio.CancelledError:
            # The client went away while its admission was on the wire. The shared pipeline
            # runs the script all the same: count the hold as taken, and have `fail` wait
            # for the pipeline before it releases the hold and removes the in-flight entry.
            call.reservation, call.admitting = admission.reservation, trip.landed
            raise
        call.circuit_states[first] = replies[circuit_reply]
        reply = replies[admission.index]
        if call.cache_key and admission.cache_checked(reply):
            call.cache_status = "miss"
        hit = admission.outcome(reply)
        if hit is not None:
            call.cache_status = "hit"
            return cache.CachedAnswer.loads(hit)
        call.reservation = admission.reservation
    except (RedisError, OSError) as exc:
        call.cache_key, call.cache_status = None, "bypass"
        if call.budgets and not team.budget_fail_open:
            raise ServiceUnavailable(
                "Budget counters are unreachable, so spending cannot be checked; try again "
                "shortly.",
                code="budget_store_unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        log.warning(
            "redis unreachable; serving %s without cache or limits (fail open)", call.request_id
        )
    return None
