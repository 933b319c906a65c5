"""Requests and tokens per minute, per key and per team, shared by every process via Redis.

Rate limits are APPROXIMATE (token buckets refilled continuously, tokens estimated before the
call): they stop runaway loops within seconds. Budgets (budgets/services.py) are the EXACT
guard on money.
"""

from __future__ import annotations

from redis.asyncio import Redis

from budgets import lua
from budgets.keys import RATE_BUCKET_TTL_MS, rate_bucket_key
from gateway.config import KeySnap, TeamSnap
from gateway.errors import RateLimited

_METRICS = {"rpm": "requests", "tpm": "tokens"}


async def check_rate_limits(*, redis: Redis, key: KeySnap, team: TeamSnap, tokens: int) -> None:
    """Take one request and `tokens` tokens from every bucket that applies, or refuse.

    One script, one round trip; none at all when neither the key nor the team has a limit.
    Raises RateLimited (429, Retry-After in whole seconds) naming the limit that was hit.
    """
    buckets = [
        (owner, owner_id, metric, limit, 1 if metric == "rpm" else max(0, tokens))
        for owner, owner_id, limits in (
            ("key", key.id, (("rpm", key.rpm_limit), ("tpm", key.tpm_limit))),
            ("team", team.id, (("rpm", team.rpm_limit), ("tpm", team.tpm_limit))),
        )
        for metric, limit in limits
        if limit
    ]
    if not buckets:
        return
    args: list[int] = []
    for *_, limit, cost in buckets:
        args += [limit, cost]
    script = redis.register_script(lua.RATE_LIMIT)
    result = await script(
        keys=[rate_bucket_key(o, i, m) for o, i, m, *_ in buckets], args=[*args, RATE_BUCKET_TTL_MS]
    )
    if not int(result[0]):
        return
    owner, _, metric, limit, _ = buckets[int(result[0]) - 1]
    wait_s = max(1, -(-int(result[1]) // 1000))
    who = f"key {key.prefix}…" if owner == "key" else f'team "{team.name}"'
    raise RateLimited(
        f"Rate limit reached: {limit} {_METRICS[metric]} per minute for {who}. "
        f"Retry in {wait_s} s.",
        headers={"Retry-After": str(wait_s)},
    )
