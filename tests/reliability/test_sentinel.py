"""Redis with Sentinel, as local processes the test starts and stops: a primary, a replica and
three sentinels. A gateway process pointed at `redis+sentinel://` serves budgeted teams under
load; a `SENTINEL FAILOVER` promotes the replica; the same process (no restart) serves again
on the new primary within a bounded number of errors, /readyz says ok again, no 500 reaches a
client, every request answered after the switch is in the ledger once, and no budget counter
passes its limit. A Redis that is a replica makes /readyz answer 503."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as redis_async
from django.core.exceptions import ImproperlyConfigured

from budgets.keys import budget_keys
from budgets.models import Budget
from budgets.windows import current_windows
from gateway import ledger, probes
from gateway.models import UsageRecord
from gateway.money import usd_to_units
from gateway.redisurl import SentinelConfig, sentinel_config
from tests.processes import (
    SERVICE,
    RedisServer,
    requires_postgres,
    requires_redis_server,
    wait_for,
)
from tests.reliability.killed_primary import hard_budget_across_a_kill
from tests.reliability.test_redis_restart import DEADLINE_S, Load, setup_teams


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_failover_under_load_needs_no_restart_and_loses_nothing_answered(sentinels, gateways):
    secrets = setup_teams()
    (gateway,) = gateways(1, redis_url=sentinels.url, GATEWAY_LEDGER_IN_PROCESS="1")
    assert httpx.get(gateway.url + "/readyz", timeout=5).json()["checks"]["redis"] == "ok"
    load = Load(gateway.base_url, secrets)
    load.thread.start()
    try:
        load.wait_served(5, what="on the first primary")
        old = sentinels.primary.port
        sentinels.client().execute_command("SENTINEL", "FAILOVER", SERVICE)
        wait_for(
            lambda: sentinels.primary_port() == sentinels.replica.port,
            timeout=DEADLINE_S,
            what="the replica promoted",
        )
        # What the old primary acknowledged in its last moment (before Sentinel demoted it)
        # may be lost with it: docs/operations.md. A second later, nothing may be.
        switched = time.monotonic() + 1.0
        load.wait_recovered(gateway.url, after=switched)
    finally:
        load.stopping.set()
        load.thread.join(30)
    assert old != sentinels.primary_port()
    results = load.results
    assert not [r for r in results if r.status >= 500 and r.status != 503], gateway.output()
    errors = [r for r in results if r.status != 200]
    assert len(errors) <= 20, [(r.status, r.code) for r in errors]  # bounded, during the switch

    # Every request answered after the switch is in the ledger, once.
    gateway.stop()
    ledger.drain()
    recorded = list(UsageRecord.objects.values_list("request_id", flat=True))
    assert len(recorded) == len(set(recorded))
    answered_after = {r.request_id for r in results if r.status == 200 and r.sent >= switched}
    assert answered_after <= set(recorded)
    # No budget counter on the new primary passes its limit.
    primary = redis_sync.Redis(host="127.0.0.1", port=sentinels.primary_port())
    for budget in Budget.objects.select_related("team"):
        for window in current_windows(budget.team.timezone):
            limit = budget.daily_limit_usd if window.name == "daily" else budget.monthly_limit_usd
            spent = int(primary.get(budget_keys(budget.team_id, budget.pk, window.key).spent) or 0)
            assert spent <= usd_to_units(limit)


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_hard_budget_near_its_limit_is_not_passed_when_the_primary_is_killed(sentinels, gateways):
    """tests/reliability/killed_primary.py: the sentinels see the primary down after 1 s and
    promote the replica, with no command from anyone."""
    servers = {server.port: server for server in (sentinels.primary, sentinels.replica)}
    hard_budget_across_a_kill(
        gateways,
        sentinels.url,
        client=lambda: servers[sentinels.primary_port()].client(),
        primary_port=lambda key: sentinels.primary_port(),
        kill=lambda port: servers[port].kill(),
    )


@requires_redis_server
def test_readyz_refuses_a_redis_that_is_a_replica():
    primary = RedisServer().start()
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port))).start()
    try:

        async def check(port: int) -> None:
            client = redis_async.Redis(host="127.0.0.1", port=port, socket_timeout=5)
            try:
                await probes.writable(client)
            finally:
                await client.aclose()

        asyncio.run(check(primary.port))
        with pytest.raises(redis_sync.exceptions.ReadOnlyError):
            asyncio.run(check(replica.port))
    finally:
        replica.stop()
        primary.stop()


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "redis+sentinel://a:26379,b:26380/mymaster/2",
            SentinelConfig((("a", 26379), ("b", 26380)), "mymaster", 2),
        ),
        ("sentinel://host/svc", SentinelConfig((("host", 26379),), "svc", 0)),
        (
            "redis+sentinel://:s%40cret@h:1/svc",
            SentinelConfig((("h", 1),), "svc", 0, None, "s@cret"),
        ),
        ("redis://localhost:6379/0", None),
        ("", None),
    ],
)
def test_sentinel_urls_are_read(url, expected):
    assert sentinel_config(url) == expected


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://h:26379", "redis+sentinel://h:x/svc", "redis+sentinel://h/svc/db/extra"],
)
def test_a_malformed_sentinel_url_stops_the_start_with_the_reason(url):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        sentinel_config(url)


@pytest.mark.slow
@requires_redis_server
def test_every_client_of_a_process_finds_the_primary_through_the_sentinels(sentinels):
    """django-redis (the login guard's cache), redis-py's sync client (admin, tasks) and the
    asyncio client (the hot path), in a process started with the Sentinel URL."""
    import os
    import sys

    from tests.processes import ROOT

    script = (
        "import asyncio, django; django.setup()\n"
        "from django.core.cache import cache\n"
        "from gateway import runtime\n"
        "cache.set('sentinel-probe', 'cached', 30)\n"
        "runtime.sync_redis().set('gw:sentinel-probe', 'sync')\n"
        "async def main():\n"
        "    r = runtime.aredis()\n"
        "    await r.set('gw:sentinel-probe-async', 'async')\n"
        "    print(cache.get('sentinel-probe'), runtime.multiplexed(r))\n"
        "asyncio.run(main())\n"
    )
    env = {
        **os.environ,
        "REDIS_URL": sentinels.url,
        "SECRET_KEY": "x",
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    # The cache answered; the hot path goes through the Sentinel pool (no pipelined socket).
    assert done.stdout.decode().split() == ["cached", "None"]
    primary = sentinels.primary.client()
    assert primary.get("gw:sentinel-probe") == b"sync"
    assert primary.get("gw:sentinel-probe-async") == b"async"
    assert any(k.endswith(b"sentinel-probe") for k in primary.keys("dj:*"))
