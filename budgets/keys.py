"""The one place for the Redis keys of budgets, rate limits and digests, and their lifetimes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from gateway.redisurl import team_tag

# Spent counters outlive their window by this much so the admin and the reconciliation can
# still read yesterday's and last month's totals.
SPENT_GRACE_S = 3 * 86400
# Rate-limit buckets are refilled within a minute; an idle bucket is full, so it may vanish.
RATE_BUCKET_TTL_MS = 120_000
DIGEST_CLAIM_TTL_S = 3 * 86400
# A monthly report, once claimed, is not sent again for that team and month.
MONTHLY_REPORT_CLAIM_TTL_S = 40 * 86400
# The alert claim (in `alerted`) that the exhaustion alert and the 100 % threshold share.
EXHAUSTED_THRESHOLD = 100


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    """The counters of one budget in one window (e.g. budget 7, window 2026-11-27)."""

    spent: str  # integer units settled so far (exact)
    reserved: str  # integer units held by live reservations (exact)
    holds: str  # hash: request id -> units it holds
    expiries: str  # sorted set: request id scored by its expiry, in ms since the epoch
    alerted: str  # hash: threshold -> 1 once its alert has been claimed

    @property
    def reservation_keys(self) -> list[str]:
        return [self.spent, self.reserved, self.holds, self.expiries]

    def settled(self, request_id: str) -> str:
        """The marker that a request's spend was counted (lua.SPEND): one string key per
        request, with its own short lifetime, so a repeated settle adds nothing while `holds`
        and `expiries` keep only the requests in flight. Named after this window's keys so
        that it lands in their hash slot once they carry a cluster hash tag."""
        return self.spent.removesuffix(":spent") + ":settled:" + request_id


def budget_keys(team_id: int, budget_id: int, window_key: str) -> BudgetKeys:
    """The counters of a budget of team `team_id`: on Redis Cluster in the team's slot, with
    its rate buckets and cache entries (gateway/redisurl.py), so that one script holds them."""
    return _budget_keys(team_tag(team_id), budget_id, window_key)


@lru_cache(maxsize=4096)  # a request asks for the same few budgets' keys at admit and settle
def _budget_keys(tag: str, budget_id: int, window_key: str) -> BudgetKeys:
    base = f"gw:budget:{tag}{budget_id}:{window_key}"
    return BudgetKeys(
        spent=f"{base}:spent",
        reserved=f"{base}:reserved",
        holds=f"{base}:holds",
        expiries=f"{base}:expiries",
        alerted=f"{base}:alerted",
    )


def rate_bucket_key(team_id: int, owner: str, owner_id: int, metric: str) -> str:
    """owner: "key" (of team `team_id`) or "team"; metric: "rpm" or "tpm"."""
    return f"gw:rate:{team_tag(team_id)}{owner}:{owner_id}:{metric}"


def digest_claim_key(team_id: int, day_key: str) -> str:
    return f"gw:digest:{team_id}:{day_key}"


def monthly_report_claim_key(team_id: int, month_key: str) -> str:
    return f"gw:monthly-report:{team_id}:{month_key}"


def auth_failures_key(client: str) -> str:
    """Failed authentications of one client address in its current minute (gateway/auth.py)."""
    return f"gw:authfail:{client}"
