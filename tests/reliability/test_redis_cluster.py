"""Redis Cluster (issue 23), as local processes the test starts and stops: three primaries.
A gateway process pointed at `redis+cluster://` serves budgeted teams, in the team and in the
shared cache scope, through the real `openai` client: cache hits are served, every answered
request is in the ledger once, each budget's counter equals the ledger's spend, and /readyz
says ok. The keys are spread over the nodes, and each script's keys share one slot (Redis
refuses a script whose keys do not, so a passing request proves it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import openai
import pytest
from django.core.exceptions import ImproperlyConfigured
from redis.cluster import key_slot
from redis.exceptions import RedisError

from budgets.keys import budget_keys, rate_bucket_key
from budgets.models import Budget
from budgets.reconcile import ledger_units, rebuild_counters
from budgets.windows import current_windows
from gateway import cache, ledger, probes, redisurl, runtime
from gateway.admission import queue_admission
from gateway.models import Team, UsageRecord
from gateway.money import usd_to_units
from gateway.redisurl import ClusterConfig, cluster_config
from tests.budgets.conftest import team_snap
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.processes import RedisCluster, requires_postgres, requires_redis_server, wait_for
from tests.reliability.killed_primary import hard_budget_across_a_kill
from tests.reliability.test_redis_restart import DEADLINE_S, FEATURE, Load, setup_teams

REQUESTS = 12  # per team, before the load


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_gateway_on_a_cluster_serves_caches_and_records_every_request_once(
    redis_cluster, gateways, monkeypatch, request
):
    provider = make_provider(options={"latency_ms": 5})
    make_model("sim-model", provider)
    secrets = {}
    for name, scope in (("own", "team"), ("sharing", "shared")):
        team = make_team(name, cache_scope=scope)
        make_feature(team, "chatbot")
        make_budget(team, daily_limit_usd="100", monthly_limit_usd="1000")
        secrets[name] = make_key(team, rpm_limit=10_000)[1]
    (gateway,) = gateways(1, redis_url=redis_cluster.url, GATEWAY_LEDGER_IN_PROCESS="1")
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"

    answered: list[str] = []
    for name, secret in secrets.items():
        client = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
        for i in range(REQUESTS):
            raw = client.chat.completions.with_raw_response.create(
                model="sim-model",
                messages=[{"role": "user", "content": f"question {i % 3}"}],
                extra_headers=FEATURE,
            )
            assert raw.parse().choices[0].message.content
            answered.append(raw.headers["x-request-id"])
            # Each team asks three questions four times: the repeats are cache hits, in the
            # team's own slot or (shared scope) on a lookup of their own.
            assert raw.headers["x-gateway-cache"] == ("miss" if i < 3 else "hit"), (name, i)
    load = Load(gateway.base_url, {"own": secrets["own"], "sharing": secrets["sharing"]})
    load.thread.start()
    try:
        wait_for(lambda: len(load.results) >= 100, timeout=30, what="100 requests under load")
    finally:
        load.stopping.set()
        load.thread.join(30)
    assert {r.status for r in load.results} == {200}, gateway.output()
    answered += [r.request_id for r in load.results]

    # The gateway drains its own ledger queues, spread over the primaries.
    nodes = redis_cluster.client()
    monkeypatch.setattr(redisurl, "CLUSTER", True)  # name the keys as the gateway does
    request.addfinalizer(ledger.queue_key.cache_clear)
    ledger.queue_key.cache_clear()
    primaries = {nodes.get_node_from_key(ledger.queue_key(shard)).name for shard in range(4)}
    assert len(primaries) == 3, primaries
    inflight = redisurl.shared_key("inflight")
    wait_for(
        lambda: ledger.queued(nodes) == 0 and nodes.zcard(inflight) == 0,
        timeout=30,
        what="the ledger queues drained",
    )
    recorded = list(UsageRecord.objects.values_list("request_id", flat=True))
    assert sorted(recorded) == sorted(answered)  # every answered request, once
    for budget in Budget.objects.select_related("team"):
        for window in current_windows(budget.team.timezone):
            counter = nodes.get(budget_keys(budget.team_id, budget.pk, window.key).spent)
            assert int(counter or 0) == ledger_units(budget=budget, window=window) > 0
    assert "Traceback" not in gateway.output()  # the config subscriber, the drain, the sweep
    holders = [n for n in redis_cluster.nodes if n.client().dbsize()]
    assert len(holders) >= 2  # the teams' keys and the shared ones are spread


@pytest.mark.django_db
def test_every_key_of_a_requests_admission_shares_the_teams_slot(monkeypatch):
    """What Redis Cluster needs of the admission script: its rate buckets, its cache entry
    and its budgets' counters in one slot, the team's; a shared cache entry is left out of
    it (looked up on its own round trip)."""
    monkeypatch.setattr(redisurl, "CLUSTER", True)
    team = make_team(tpm_limit=1000, rpm_limit=10)
    feature = make_feature(team, "chatbot")
    make_budget(team, daily_limit_usd="5", monthly_limit_usd="50")
    make_budget(team, feature=feature, daily_limit_usd="1")
    key = make_key(team, rpm_limit=5)[0]
    snap = team_snap(team.id)

    class Keys:
        def script(self, source, keys, args):
            self.keys = keys
            return 0

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    own = cache.key_for(team=snap, body=body, chain=("m",))
    trip = Keys()
    queue_admission(
        trip,
        rate=None,
        cache_key=own,
        team=snap,
        budgets=list(snap.budgets_for(snap.features["chatbot"])),
        request_id="r1",
        units=10,
    )
    buckets = [rate_bucket_key(team.id, "key", key.id, m) for m in ("rpm", "tpm")]
    slots = {key_slot(k.encode()) for k in trip.keys + buckets}
    assert len(trip.keys) == 1 + 4 * 4 and slots == {key_slot(f"{{t{team.id}}}".encode())}

    shared = cache.key_for(team=replace(snap, cache_scope="shared"), body=body, chain=("m",))
    assert cache.outside_team_slot(shared) and not cache.outside_team_slot(own)
    monkeypatch.setattr(redisurl, "CLUSTER", False)
    assert not cache.outside_team_slot(shared)  # one Redis: every key in one script


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+cluster://a:7000,b:7001/0", ClusterConfig((("a", 7000), ("b", 7001)))),
        ("redis+cluster://:s%40cret@h", ClusterConfig((("h", 6379),), None, "s@cret")),
        ("redis://localhost:6379/0", None),
        ("redis+sentinel://h:26379/svc", None),
        ("", None),
    ],
)
def test_cluster_urls_are_read(url, expected):
    assert cluster_config(url) == expected


@pytest.mark.parametrize(
    "url", ["redis+cluster://a:7000/1", "redis+cluster://a:x", "redis+cluster:///0"]
)
def test_a_malformed_cluster_url_stops_the_start(url):
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        cluster_config(url)


def test_key_names_on_one_redis_are_what_they_always_were():
    """An upgrade renames nothing on a plain Redis or Sentinel (gateway/redisurl.py)."""
    assert not redisurl.CLUSTER
    assert budget_keys(3, 7, "2026-12-03").spent == "gw:budget:7:2026-12-03:spent"
    assert rate_bucket_key(3, "key", 9, "rpm") == "gw:rate:key:9:rpm"
    assert redisurl.shared_key("ledger") == "gw:ledger"


@requires_redis_server
def test_readyz_refuses_a_cluster_that_lost_a_primary(redis_cluster):
    """With a primary gone its slots have no owner: the teams there would be refused, so the
    instance is not ready (`cluster_state:fail`), though the shared node still takes writes."""

    async def check() -> None:
        client = runtime.async_from_url(redis_cluster.url, socket_timeout=5)
        try:
            await probes.writable(client)
        finally:
            await client.aclose()

    asyncio.run(check())
    survivor = redis_cluster.node(0)
    redis_cluster.nodes[2].stop()
    wait_for(
        lambda: b"cluster_state:fail" in survivor.execute_command("CLUSTER", "INFO"),
        timeout=20,
        what="the cluster to notice the lost primary",
    )
    with pytest.raises(RedisError):
        asyncio.run(check())


@pytest.fixture
def cluster_with_replicas(tmp_path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path, replicas=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_primary_failover_under_load_needs_no_restart_and_loses_nothing_answered(
    cluster_with_replicas, gateways, monkeypatch
):
    """Three primaries with a replica each. Under load from a fail-closed and a fail-open
    team, every primary that holds their slots or the shared slot hands over to its replica
    (`CLUSTER FAILOVER`, what an upgrade or a maintenance does). The same gateway process
    follows the new primaries without a restart; errors stay few and are 503s; every request
    answered is in the ledger once; each budget counter equals the ledger."""
    cluster = cluster_with_replicas
    secrets = setup_teams()
    (gateway,) = gateways(1, redis_url=cluster.url, GATEWAY_LEDGER_IN_PROCESS="1")
    load = Load(gateway.base_url, secrets)
    load.thread.start()
    try:
        load.wait_served(5, what="before the failover")
        keys = [f"{{t{team.pk}}}:x" for team in Team.objects.all()] + ["{gw}:x"]
        for old in sorted({cluster.primary_port(key) for key in keys}):
            (replica,) = cluster.replica_ports(old)
            cluster.node(cluster.ports.index(replica)).execute_command("CLUSTER", "FAILOVER")
            wait_for(
                lambda o=old: all(cluster.primary_port(key) != o for key in keys),
                timeout=DEADLINE_S,
                what=f"the replica of {old} promoted",
            )
        switched = time.monotonic() + 1.0
        load.wait_served(20, after=switched, what="on the new primaries, without a restart")
        ready = httpx.get(gateway.url + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        load.stopping.set()
        load.thread.join(30)
    results = load.results
    assert not [r for r in results if r.status >= 500 and r.status != 503], gateway.output()
    errors = [r for r in results if r.status != 200]
    assert len(errors) <= 20, [(r.status, r.code) for r in errors]

    gateway.stop()  # its lifespan drains the ledger once more
    logged = gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in logged and "could not settle" not in logged
    recorded = list(UsageRecord.objects.values_list("request_id", flat=True))
    assert len(recorded) == len(set(recorded))
    assert {r.request_id for r in results if r.status == 200} <= set(recorded)
    nodes = cluster.client()
    monkeypatch.setattr(redisurl, "CLUSTER", True)  # name the keys as the gateway does
    for budget in Budget.objects.select_related("team"):
        for window in current_windows(budget.team.timezone):
            counter = nodes.get(budget_keys(budget.team_id, budget.pk, window.key).spent)
            assert int(counter or 0) == ledger_units(budget=budget, window=window) > 0


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_primary_killed_under_load_is_replaced_and_reconcile_restores_its_last_writes(
    cluster_with_replicas, gateways, monkeypatch
):
    """The primary holding the fail-closed team's slot is killed outright (SIGKILL: a lost
    machine, the OOM killer). Its replica takes over once the cluster's node timeout passes
    (2 s here), with no command from anyone. Meanwhile that team is refused with 503 and the
    other team is served; afterwards both are served by the same process, without a restart.
    What the dead primary acknowledged but had not yet sent to its replica is lost with it
    (docs/operations.md, "Redis Cluster"): at most the last moment's ledger records and
    counter increments. No record is written twice, every request answered once the new
    primary serves is in the ledger, and `rebuild_counters` (reconcile) raises each counter
    that lost increments to the ledger's total."""
    cluster = cluster_with_replicas
    secrets = setup_teams()
    (gateway,) = gateways(1, redis_url=cluster.url, GATEWAY_LEDGER_IN_PROCESS="1")
    closed = Team.objects.get(name="closed")
    team_key = f"{{t{closed.pk}}}:x"
    load = Load(gateway.base_url, secrets)
    load.thread.start()
    try:
        load.wait_served(5, what="before the kill")
        old = cluster.primary_port(team_key)
        (replica,) = cluster.replica_ports(old)
        killed = time.monotonic()
        cluster.nodes[cluster.ports.index(old)].kill()
        wait_for(
            lambda: cluster.primary_port(team_key) == replica,
            timeout=DEADLINE_S,
            what=f"the replica {replica} promoted in place of the killed {old}",
        )
        promoted = time.monotonic() + 1.0  # the gateway relearns the slots on its next error
        load.wait_recovered(gateway.url, after=promoted)
    finally:
        load.stopping.set()
        load.thread.join(30)
    results = load.results
    assert not [r for r in results if r.status >= 500 and r.status != 503], gateway.output()
    errors = [r for r in results if r.status != 200]
    # Refusals only while the slot had no primary, and only for the team whose slot it was.
    assert {(r.team, r.status) for r in errors} <= {("closed", 503)}
    assert all(killed <= r.done and r.sent <= promoted for r in errors), [
        (r.sent - killed, r.done - killed) for r in errors
    ]

    gateway.stop()  # its lifespan drains the ledger once more
    logged = gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in logged, logged
    recorded = list(UsageRecord.objects.values_list("request_id", flat=True))
    assert len(recorded) == len(set(recorded)), "a ledger record was written twice"
    answered = [r for r in results if r.status == 200]
    assert {r.request_id for r in answered if r.sent >= promoted} <= set(recorded)
    # Lost with the dead primary: at most what it acknowledged in its last moment.
    missing = [r for r in answered if r.request_id not in set(recorded)]
    assert all(abs(r.done - killed) < 1.0 for r in missing), [r.done - killed for r in missing]

    monkeypatch.setattr(redisurl, "CLUSTER", True)  # name the keys as the gateway does
    nodes = cluster.client()
    rebuild_counters(redis=nodes)  # raises a counter that lost increments to the ledger
    for budget in Budget.objects.select_related("team"):
        # A lost record whose counter increment survived (its queue was on the dead node,
        # its team's slot elsewhere) leaves the counter above the ledger by that record's
        # cost: reconcile never lowers a counter, so the budget errs toward refusing.
        lost = sum(usd_to_units(r.cost_usd) for r in missing if r.team == budget.team.name)
        for window in current_windows(budget.team.timezone):
            counter = int(nodes.get(budget_keys(budget.team_id, budget.pk, window.key).spent))
            in_ledger = ledger_units(budget=budget, window=window)
            assert 0 < in_ledger <= counter <= in_ledger + lost, (counter, in_ledger, lost)


@pytest.mark.slow
@requires_postgres
@requires_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_hard_budget_near_its_limit_is_not_passed_when_its_primary_is_killed(
    cluster_with_replicas, gateways, monkeypatch
):
    """tests/reliability/killed_primary.py, on a cluster with a replica per primary."""
    cluster = cluster_with_replicas
    monkeypatch.setattr(redisurl, "CLUSTER", True)  # name the keys as the gateway does
    hard_budget_across_a_kill(
        gateways,
        cluster.url,
        client=cluster.client,
        primary_port=cluster.primary_port,
        kill=lambda port: cluster.nodes[cluster.ports.index(port)].kill(),
    )
