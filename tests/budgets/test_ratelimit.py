"""Requests and tokens per minute, per key and per team."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest
from django.conf import settings
from redis.asyncio import Redis

from budgets.keys import rate_bucket_key
from budgets.ratelimit import rate_check
from gateway.errors import RateLimited
from gateway.snapshot import KeySnap
from tests.budgets.conftest import arun, team_snap
from tests.budgets.steps import check_rate_limits
from tests.factories import make_key, make_team
from tests.processes import requires_real_redis

pytestmark = pytest.mark.django_db


def key_snap(team, **limits) -> KeySnap:
    key, _ = make_key(team, **limits)
    return KeySnap(
        id=key.id,
        prefix=key.prefix,
        team_id=team.id,
        feature_id=None,
        expires_at=None,
        revoked=False,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
    )


def _check(key, team, tokens=10):
    return arun(check_rate_limits, key=key, team=team, tokens=tokens)


def test_it_refuses_the_request_past_the_key_rpm_with_retry_after():
    team = make_team()
    key = key_snap(team, rpm_limit=3)
    snap = team_snap(team.id)
    for _ in range(3):
        _check(key, snap)
    with pytest.raises(RateLimited) as refused:
        _check(key, snap)
    err = refused.value
    assert (err.status, err.code, err.type) == (429, "rate_limited", "rate_limit_error")
    assert err.headers["Retry-After"] in {"19", "20"}  # one request refills in 60/3 s
    assert err.message.startswith(f"Rate limit reached: 3 requests per minute for key {key.prefix}")


def test_it_refuses_tokens_past_the_key_tpm(redis_sync):
    team = make_team()
    key = key_snap(team, tpm_limit=1000)
    snap = team_snap(team.id)
    _check(key, snap, tokens=600)
    with pytest.raises(RateLimited) as refused:
        _check(key, snap, tokens=600)
    assert "1000 tokens per minute" in refused.value.message
    assert refused.value.headers["Retry-After"] in {"12", "13"}  # 200 tokens at 1000/min
    tokens = float(redis_sync.hget(rate_bucket_key(key.team_id, "key", key.id, "tpm"), "tokens"))
    assert 399 < tokens < 402  # the refused request took nothing


def test_a_request_larger_than_the_tpm_passes_on_a_full_bucket_and_leaves_it_in_debt():
    team = make_team()
    key = key_snap(team, tpm_limit=1000)
    snap = team_snap(team.id)
    _check(key, snap, tokens=5000)
    with pytest.raises(RateLimited) as refused:
        _check(key, snap, tokens=1)
    assert int(refused.value.headers["Retry-After"]) >= 239  # 4000 tokens of debt first


def test_the_team_limit_is_shared_by_its_keys():
    team = make_team(rpm_limit=2)
    snap = team_snap(team.id)
    first, second = key_snap(team), key_snap(team)
    _check(first, snap)
    _check(second, snap)
    with pytest.raises(RateLimited) as refused:
        _check(first, snap)
    assert 'for team "acme"' in refused.value.message


def test_no_limit_queues_no_rate_bucket():
    team = make_team()
    key, snap = key_snap(team), team_snap(team.id)
    # Admission queues no bucket at all: its round trip carries only the other steps.
    assert rate_check(key=key, team=snap, tokens=100) is None


def _fire(redis_url: str, key: KeySnap, team, count: int) -> int:
    async def main() -> int:
        redis = Redis.from_url(redis_url)
        allowed = 0
        for _ in range(count):
            try:
                await check_rate_limits(redis=redis, key=key, team=team, tokens=1)
                allowed += 1
            except RateLimited:
                pass
        await redis.aclose()
        return allowed

    return asyncio.run(main())


@pytest.mark.slow
@requires_real_redis
def test_the_rpm_holds_across_two_processes():
    team = make_team()
    key = key_snap(team, rpm_limit=10)
    snap = team_snap(team.id)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        allowed = pool.starmap(_fire, [(settings.REDIS_URL, key, snap, 30)] * 2)
    # 10 at once, plus at most one refilled while the 60 calls run (10/min = 1 per 6 s).
    assert 10 <= sum(allowed) <= 11
