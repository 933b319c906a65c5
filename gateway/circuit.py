"""A circuit breaker per provider, shared by every process through Redis.

Closed: calls go through and consecutive failures are counted. After N consecutive failures
the circuit opens for a cooldown and the chain skips the provider. Once the cooldown is over
exactly one probe is let through (half-open, claimed with SET NX); its success closes the
circuit, its failure opens it again. Approximate by nature: two processes may both count the
Nth failure, which only matters for when, not whether, the circuit opens.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import Enum

import orjson
from django.conf import settings

from gateway.redisurl import shared_key
from gateway.roundtrip import run_script

PREFIX = shared_key("cb:")
EVENTS_KEY = shared_key("events:circuit")

# KEYS[1] = state hash, KEYS[2] = events list, KEYS[3] = the probe claim (declared, like every
# key a script touches: issue 23). ARGV = now_ms, threshold, cooldown_ms, provider.
_FAIL_SCRIPT = """
local now = tonumber(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until > now then
  return 0  -- already open: a late failure neither extends the cooldown nor counts again
end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if open_until > 0 or fails >= tonumber(ARGV[2]) then  -- a failed probe, or the Nth failure
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[3]), 'fails', 0)
  redis.call('DEL', KEYS[3])
  redis.call('RPUSH', KEYS[2], cjson.encode({provider=ARGV[4], opened_at_ms=now}))
  return 1
end
return 0
"""


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # this caller holds the single probe


def _key(provider: str) -> str:
    return PREFIX + provider


def _now_ms() -> int:
    return int(time.time() * 1000)


def queue_read(trip, provider: str) -> int:
    """Queue the read of a provider's state on a round trip; pass its reply to `check`."""
    return trip.add("HMGET", _key(provider), "open_until", "fails")


async def check(redis, provider: str, state: list | None = None) -> tuple[State, bool]:
    """Whether a call to the provider may go through now, and whether failures are counted
    against it (so that a success only writes to Redis when there is something to reset).

    `state` is the reply of `queue_read` when the caller already read it."""
    if state is None:
        state = await redis.hmget(_key(provider), "open_until", "fails")
    open_until, fails = state
    dirty = bool(fails and int(fails))
    if not open_until or int(open_until) == 0:
        return State.CLOSED, dirty
    if _now_ms() < int(open_until):
        return State.OPEN, dirty
    cooldown_ms = settings.GATEWAY["CIRCUIT_COOLDOWN_S"] * 1000
    if await redis.set(_key(provider) + ":probe", b"1", nx=True, px=cooldown_ms):
        return State.HALF_OPEN, True
    return State.OPEN, dirty


async def record_success(redis, provider: str, state: State, dirty: bool) -> None:
    """Close the circuit after a successful probe, and reset the failure count."""
    if state is State.HALF_OPEN:
        await redis.delete(_key(provider), _key(provider) + ":probe")
        # The outage's end, for the availability report (reports/availability.py).
        event = {"provider": provider, "opened_at_ms": _now_ms(), "kind": "closed"}
        await redis.rpush(EVENTS_KEY, orjson.dumps(event))
    elif dirty:
        await redis.hset(_key(provider), "fails", 0)


async def record_failure(redis, provider: str) -> bool:
    """Count a failure; returns True when this failure opened (or re-opened) the circuit."""
    opened = await run_script(
        redis,
        _FAIL_SCRIPT,
        keys=[_key(provider), EVENTS_KEY, _key(provider) + ":probe"],
        args=[
            _now_ms(),
            settings.GATEWAY["CIRCUIT_FAILURES"],
            settings.GATEWAY["CIRCUIT_COOLDOWN_S"] * 1000,
            provider,
        ],
    )
    return bool(opened)


def parse_event(raw: bytes) -> dict:
    """One event pushed to EVENTS_KEY (an opening by the failure script, a closing by a
    successful probe), as the ledger's drain hands it on (gateway/ledger.py
    `on_circuit_events`): provider, opened_at (when it happened; ISO 8601, UTC), kind and
    the reason."""
    event = orjson.loads(raw)
    opened = datetime.fromtimestamp(event["opened_at_ms"] / 1000, tz=UTC)
    closed = event.get("kind") == "closed"
    return {
        "provider": event["provider"],
        "opened_at": opened.isoformat(),
        "kind": "closed" if closed else "opened",
        "reason": "probe_succeeded" if closed else "consecutive_failures",
    }
