"""Requests and tokens per minute, per key and per team, shared by every process via Redis.

Rate limits are APPROXIMATE (token buckets refilled continuously, tokens estimated before the
call): they stop runaway loops within seconds. Budgets (budgets/services.py) are the EXACT
guard on money.
"""

from __future__ import annotations

from dataclasses import dataclass

from budgets.keys import RATE_BUCKET_TTL_MS, rate_bucket_key
from gateway.errors import RateLimited
from gateway.snapshot import KeySnap, TeamSnap

_METRICS = {"rpm": "requests", "tpm": "tokens"}


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One request's take from every bucket that applies: one script, queued on a round trip.

    `refusal(reply)` reads the script's reply: None when it passed, else the RateLimited
    (429, Retry-After in whole seconds) naming the limit that was hit.
    """

    key: KeySnap
    team: TeamSnap
    buckets: tuple[tuple[str, int, str, int, int], ...]  # owner, owner id, metric, limit, cost

    def keys(self) -> list[str]:
        return [rate_bucket_key(self.team.id, o, i, m) for o, i, m, *_ in self.buckets]

    def args(self) -> list[int]:
        """Capacity and cost per bucket, then the buckets' TTL (the script's arguments)."""
        args: list[int] = []
        for *_, limit, cost in self.buckets:
            args += [limit, cost]
        return [*args, RATE_BUCKET_TTL_MS]

    def refusal(self, reply) -> RateLimited | None:
        if not int(reply[0]):
            return None
        owner, _, metric, limit, _ = self.buckets[int(reply[0]) - 1]
        wait_s = max(1, -(-int(reply[1]) // 1000))
        who = f"key {self.key.prefix}…" if owner == "key" else f'team "{self.team.name}"'
        error = RateLimited(
            f"Rate limit reached: {limit} {_METRICS[metric]} per minute for {who}. "
            f"Retry in {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )
        error.refusal = {  # the message's figures as data, for the usage record
            "kind": "rate_limit",
            "scope": owner,
            "metric": metric,
            "limit": limit,
            "key_prefix": self.key.prefix,
            "team": self.team.name,
            "bucket": rate_bucket_key(
                self.team.id, owner, self.buckets[int(reply[0]) - 1][1], metric
            ),
            "retry_after_s": wait_s,
        }
        return error


def rate_check(*, key: KeySnap, team: TeamSnap, tokens: int) -> RateCheck | None:
    """The buckets a request takes from; None when neither the key nor the team has a limit."""
    buckets = tuple(
        (owner, owner_id, metric, limit, 1 if metric == "rpm" else max(0, tokens))
        for owner, owner_id, limits in (
            ("key", key.id, (("rpm", key.rpm_limit), ("tpm", key.tpm_limit))),
            ("team", team.id, (("rpm", team.rpm_limit), ("tpm", team.tpm_limit))),
        )
        for metric, limit in limits
        if limit
    )
    return RateCheck(key, team, buckets) if buckets else None
