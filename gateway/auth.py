"""Who is calling: the team key in `Authorization: Bearer …`, resolved without the database
on a steady state (see gateway.snapshot for the snapshot that holds the keys and its bound).

A key the process's snapshot does not hold waits for a snapshot loaded after the request
arrived (one shared reload, rate-limited) before it is refused, so a key created a moment
ago in another process works on its first request. A hash still unknown after that is
remembered for a few seconds and refused at once.

Failed authentications are counted per client address in Redis (`AUTH_FAILURES_PER_MINUTE`,
shared by every process); past the limit the client gets 429 with Retry-After, and this
process then refuses that client's unknown keys without touching Redis or the database until
the minute is over. Only failures are counted: a valid key costs no Redis command here.
If Redis is unreachable the count is skipped (fail open: the client gets its 401).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import weakref
from typing import NoReturn

from django.conf import settings
from redis.exceptions import RedisError

from budgets.keys import auth_failures_key
from gateway import runtime
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from gateway.models import ApiKey
from gateway.process import state
from gateway.roundtrip import RoundTrip
from gateway.snapshot import FeatureSnap, KeySnap, Snapshot, TeamSnap, store

log = logging.getLogger(__name__)

WINDOW_MS = 60_000
BLOCKED_MAX = 10_000  # client addresses this process remembers as over the limit

# The client's failures in its current window, and the window's remaining milliseconds.
COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

_redis_down_logged = -math.inf
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def bearer_secret(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed("No API key: send 'Authorization: Bearer <your gateway key>'.")
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <key>'.")
    return secret


async def authenticate(
    authorization: str | None, meta: dict | None = None
) -> tuple[KeySnap, TeamSnap, Snapshot]:
    """The key, its team and the config snapshot; 401 for a missing, unknown, revoked or
    expired key, 429 once the client (`meta`: the request's META, for its address) has
    failed too often. The lookup is by SHA-256 of the secret through a dict, so no
    comparison of secrets happens in Python at all (nothing to time)."""
    arrived = time.monotonic()
    secret = bearer_secret(authorization)
    hashed = ApiKey.hash_secret(secret)
    snapshot = await store().snapshot()
    key = snapshot.keys.get(hashed)
    if key is None:
        snapshot, key = await _unknown_key(hashed, meta, arrived)
    if not key.active:
        await _refuse(
            meta,
            AuthenticationFailed(
                f"The API key {key.prefix}… is revoked or expired.", code="revoked_api_key"
            ),
        )
    team = snapshot.teams.get(key.team_id)
    if team is None:  # deleted while the snapshot was loading
        await _refuse(meta, AuthenticationFailed("The API key's team no longer exists."))
    return key, team, snapshot


async def _unknown_key(hashed: str, meta: dict | None, arrived: float) -> tuple[Snapshot, KeySnap]:
    """A key the snapshot does not hold: look again in a snapshot loaded after this request
    arrived, unless the client is over its limit or the hash was found unknown just now."""
    client = client_address(meta)
    _refuse_if_blocked(client)
    config = store()
    if not config.recently_unknown(hashed):
        snapshot = await config.fresh_snapshot(after=arrived, hashed=hashed)
        key = snapshot.keys.get(hashed)
        if key is not None:
            return snapshot, key
        config.remember_unknown(hashed)
        await _one_per_turn()
    await _refuse(meta, AuthenticationFailed("Incorrect API key provided."), client=client)
    raise AssertionError("unreachable")  # _refuse always raises


async def _one_per_turn() -> None:
    """Go on one at a time, one per turn of the event loop.

    A reload wakes every request that waited for it in the same turn: under a flood, hundreds
    of refusals. Answered in that one turn, they would hold up every other request in the
    worker (valid ones included) for as long as they take; queued here, each turn answers
    one and then reads the sockets again, so a valid request waits for one refusal at most.
    """
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = asyncio.Lock()
    async with turn:
        await asyncio.sleep(0)  # held across one turn: the others woken with us queue up


def client_address(meta: dict | None) -> str:
    """The address failures are counted against: the socket's peer, or, behind
    `TRUSTED_PROXY_HOPS` proxies, the address the outermost of them saw in X-Forwarded-For.
    IPv6 addresses count per /64 (what one host is usually given)."""
    meta = meta or {}
    ip = _ip(meta.get("REMOTE_ADDR") or "")
    hops = int(settings.GATEWAY["TRUSTED_PROXY_HOPS"])
    if hops > 0:
        hosts = [h.strip() for h in (meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
        hosts = [h for h in hosts if h]
        if hosts:
            ip = _ip(hosts[-hops] if len(hosts) >= hops else hosts[0]) or ip
    if ip is None:
        return "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _throttled(client: str, seconds: float) -> RateLimited:
    wait_s = max(1, math.ceil(seconds))
    return RateLimited(
        f"Too many failed authentications from {client}; retry in {wait_s} s with a valid API key.",
        code="too_many_failed_authentications",
        headers={"Retry-After": str(wait_s)},
    )


def _refuse_if_blocked(client: str) -> None:
    blocked = state().blocked_clients
    until = blocked.get(client)
    if until is None:
        return
    left = until - time.monotonic()
    if left > 0 and settings.GATEWAY["AUTH_FAILURES_PER_MINUTE"] > 0:
        raise _throttled(client, left)
    blocked.pop(client, None)


async def _refuse(meta: dict | None, error: AuthenticationFailed, *, client: str = "") -> NoReturn:
    """Count the failure against the client and raise: `error`, or 429 past the limit."""
    global _redis_down_logged
    limit = int(settings.GATEWAY["AUTH_FAILURES_PER_MINUTE"])
    if limit <= 0:
        raise error
    client = client or client_address(meta)
    _refuse_if_blocked(client)
    try:
        trip = RoundTrip(runtime.aredis())
        index = trip.script(COUNT_FAILURE, [auth_failures_key(client)], [WINDOW_MS])
        count, ttl_ms = (await trip.send())[index]
    except (RedisError, OSError) as exc:
        now = time.monotonic()
        if now - _redis_down_logged > 60:
            _redis_down_logged = now
            log.warning("failed authentications are not counted, Redis is unreachable: %r", exc)
        raise error from None
    if int(count) <= limit:
        raise error
    seconds = max(int(ttl_ms), 1) / 1000
    blocked = state().blocked_clients  # client -> monotonic instant its window ends
    if client not in blocked:
        log.warning(
            "client %s refused for %.0f s after %d failed authentications in a minute",
            client,
            seconds,
            int(count),
        )
    while len(blocked) >= BLOCKED_MAX:
        del blocked[next(iter(blocked))]
    blocked[client] = time.monotonic() + seconds
    raise _throttled(client, seconds) from None


def resolve_feature(key: KeySnap, team: TeamSnap, header: str | None) -> FeatureSnap | None:
    """The feature the request is billed to: the key's pinned one, or the X-Gateway-Feature
    header. A team that has features must name one."""
    pinned = next((f for f in team.features.values() if f.id == key.feature_id), None)
    name = (header or "").strip()
    if pinned is not None:
        if name and name != pinned.name:
            raise PermissionDenied(
                f"This key is pinned to the feature '{pinned.name}'; it cannot bill '{name}'.",
                param="X-Gateway-Feature",
            )
        return pinned
    known = ", ".join(sorted(team.features)) or "none"
    if not name:
        if team.features:
            raise InvalidRequest(
                "Name the feature in the X-Gateway-Feature header; "
                f"team '{team.name}' has: {known}.",
                param="X-Gateway-Feature",
                code="feature_required",
            )
        return None
    feature = team.features.get(name)
    if feature is None:
        raise InvalidRequest(
            f"Unknown feature '{name}' for team '{team.name}'; its features are: {known}.",
            param="X-Gateway-Feature",
            code="unknown_feature",
        )
    return feature
