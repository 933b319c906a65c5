"""The ledger: records queued off the hot path land in the database exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway import ledger, roundtrip, runtime
from gateway.lifespan import LifespanApp
from gateway.models import DeadLetter, UsageRecord
from tests.factories import make_key, make_team

pytestmark = pytest.mark.django_db(transaction=True)


def entry(team, key=None, **over) -> dict:
    return {
        "request_id": "req_" + uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        "team_id": team.id,
        "feature_id": None,
        "api_key_id": key.id if key else None,
        "requested_model": "m",
        "served_model": "m",
        "provider": "p",
        "attempts": 1,
        "attempt_log": [],
        "stream": False,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": "0.0000123456",
        "saved_usd": "0",
        "estimated": False,
        "unpriced": False,
        "latency_ms": 12,
        "status": "ok",
        "http_status": 200,
        "error_type": "",
        "cache": "miss",
        **over,
    }


async def test_queued_records_are_drained_into_the_database_exactly_once():
    team = await asyncio.to_thread(make_team)
    records = [entry(team) for _ in range(3)]
    for record in records:
        await ledger.enqueue(record)
    runtime.sync_redis().rpush(ledger.queue_key(0), ledger.encode(records[0]))  # a re-queued copy
    assert await asyncio.to_thread(ledger.drain) == 3
    assert await asyncio.to_thread(ledger.drain) == 0
    costs = await asyncio.to_thread(
        lambda: list(UsageRecord.objects.values_list("cost_usd", flat=True))
    )
    assert costs == [Decimal("0.0000123456")] * 3
    assert ledger.pending() == 0


async def test_records_wait_in_the_local_spool_while_redis_is_down(monkeypatch):
    team = await asyncio.to_thread(make_team)

    async def down(*args, **kwargs):
        raise RedisConnectionError("redis is down")

    monkeypatch.setattr(roundtrip, "execute", down)
    await ledger.enqueue(entry(team))
    assert len(ledger.spool().items) == 1
    assert await asyncio.to_thread(ledger.drain) == 1
    assert ledger.spool().items == []
    assert await asyncio.to_thread(UsageRecord.objects.count) == 1


async def test_a_failed_database_write_keeps_the_records_queued(monkeypatch):
    team = await asyncio.to_thread(make_team)
    await ledger.enqueue(entry(team))

    def broken(raws):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(ledger, "_write", broken)
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(ledger.drain)
    assert ledger.pending() == 1
    monkeypatch.undo()
    assert await asyncio.to_thread(ledger.drain) == 1


async def test_draining_updates_the_keys_last_used_time():
    team = await asyncio.to_thread(make_team)
    key, _ = await asyncio.to_thread(make_key, team)
    await ledger.enqueue(entry(team, key))
    await asyncio.to_thread(ledger.drain)
    await asyncio.to_thread(key.refresh_from_db)
    assert key.last_used_at is not None


async def test_shutdown_flushes_what_is_queued(settings):
    settings.GATEWAY = {
        **settings.GATEWAY,
        "LEDGER_IN_PROCESS": True,
        "LEDGER_FLUSH_INTERVAL_S": 60,
    }
    team = await asyncio.to_thread(make_team)
    app = LifespanApp(app=None)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        message = next(messages)
        if message["type"] == "lifespan.shutdown":
            await ledger.enqueue(entry(team))  # arrives while the server runs
        return message

    async def send(message):
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert await asyncio.to_thread(UsageRecord.objects.count) == 1


@pytest.mark.skipif(bool(django_settings.REDIS_URL), reason="the embedded mode's behaviour")
async def test_an_embedded_server_starts_with_budget_counters_rebuilt_from_the_ledger(settings):
    from budgets.services import budget_status
    from gateway.snapshot import store
    from tests.factories import make_budget

    team = await asyncio.to_thread(make_team)
    await asyncio.to_thread(make_budget, team, daily_limit_usd="10")
    await ledger.enqueue(entry(team, cost_usd="1.5"))  # spent by another process (demotraffic)
    await asyncio.to_thread(ledger.drain)
    runtime.sync_redis().flushdb()  # a new process: the in-process Redis starts empty
    app = LifespanApp(app=None)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive():
        return next(messages)

    async def send(message):
        pass

    await app({"type": "lifespan"}, receive, send)
    snapshot = await store().snapshot()
    (status, *_) = await budget_status(
        redis=runtime.aredis(), budgets=list(snapshot.teams[team.id].budgets)
    )
    assert status.spent == 15_000_000_000


async def test_a_record_the_database_refuses_is_set_aside_without_blocking_the_rest():
    team = await asyncio.to_thread(make_team)
    await ledger.enqueue(entry(team, team_id=987654))  # its team was deleted meanwhile
    await ledger.enqueue(entry(team))
    assert await asyncio.to_thread(ledger.drain) == 1
    assert await asyncio.to_thread(DeadLetter.objects.count) == 1
    assert ledger.pending() == 0


@pytest.fixture
def four_shards(settings):
    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_SHARDS": 4}


async def test_each_team_queues_on_its_shard_and_one_drain_empties_every_shard(four_shards):
    teams = [await asyncio.to_thread(make_team, f"t{n}") for n in range(4)]  # consecutive ids
    for team in teams:
        await ledger.enqueue(entry(team))
        await ledger.enqueue(entry(team))
    lengths = ledger.queue_lengths(runtime.sync_redis())
    shards = {ledger.shard_of(entry(team)) for team in teams}
    assert shards == {0, 1, 2, 3}
    assert [lengths[shard] for shard in sorted(shards)] == [2, 2, 2, 2]
    assert await asyncio.to_thread(ledger.drain) == 8
    assert ledger.queued() == 0
    assert await asyncio.to_thread(UsageRecord.objects.count) == 8


async def test_drainers_work_on_different_shards_at_once(four_shards, monkeypatch):
    """A drainer busy with one shard (here: stopped inside its write) holds only that shard's
    lock: a second drainer writes every other shard meanwhile, then the first finishes."""
    teams = [await asyncio.to_thread(make_team, f"t{n}") for n in range(4)]
    for team in teams:
        await ledger.enqueue(entry(team))
    inside, go_on = threading.Event(), threading.Event()
    write = ledger._write_or_set_aside
    first = threading.get_ident()

    def slow_for_the_first(raws):
        if threading.get_ident() == first:
            inside.set()
            assert go_on.wait(10)
        return write(raws)

    def first_drainer():
        nonlocal first
        first = threading.get_ident()
        return ledger.drain()

    monkeypatch.setattr(ledger, "_write_or_set_aside", slow_for_the_first)
    one = asyncio.create_task(asyncio.to_thread(first_drainer))
    assert await asyncio.to_thread(inside.wait, 10)
    assert await asyncio.to_thread(ledger.drain) == 3  # all but the shard the first one holds
    assert ledger.queued() == 1
    go_on.set()
    assert await one == 1
    assert ledger.queued() == 0
    assert await asyncio.to_thread(UsageRecord.objects.count) == 4


async def test_a_drain_cut_off_by_its_redis_node_takes_its_own_lock_back_on_the_next_try(
    monkeypatch, settings
):
    """The node of a shard fails mid-drain (a failover, a kill): the drainer cannot release
    its lock, which the promoted replica keeps for LOCK_MS. Its next drain takes that lock back
    by its token at once; a lock another drainer holds stays that drainer's."""
    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_SHARDS": 1}
    shard = 0
    team = await asyncio.to_thread(make_team)
    await ledger.enqueue(entry(team))
    redis = runtime.sync_redis()

    def node_gone(*args, **kwargs):
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(type(redis), "ltrim", node_gone)
    monkeypatch.setattr(ledger, "release_lock", node_gone)
    with pytest.raises(RedisConnectionError):
        await asyncio.to_thread(ledger.drain)
    monkeypatch.undo()
    assert redis.pttl(ledger.lock_key(shard)) > 0  # still held, by the drainer that was cut off
    await asyncio.to_thread(ledger.drain)
    assert ledger.queued() == 0
    assert redis.exists(ledger.lock_key(shard)) == 0
    assert await asyncio.to_thread(UsageRecord.objects.count) == 1  # written once

    theirs = ledger.acquire_lock(redis, shard)
    ledger._unreleased[shard] = "a token of ours that has expired"
    await ledger.enqueue(entry(team))
    assert await asyncio.to_thread(ledger.drain) == 0
    assert ledger.queued() == 1
    assert ledger.release_lock(redis, theirs, shard)
    assert await asyncio.to_thread(ledger.drain) == 1


async def test_a_record_queued_when_there_were_more_shards_is_still_drained(settings):
    """Lowering GATEWAY_LEDGER_SHARDS at a deploy strands nothing: drainers look in every
    shard there can be."""
    settings.GATEWAY = {**settings.GATEWAY, "LEDGER_SHARDS": 2}
    team = await asyncio.to_thread(make_team)
    runtime.sync_redis().rpush(ledger.queue_key(ledger.MAX_SHARDS - 1), ledger.encode(entry(team)))
    assert ledger.pending() == 1
    assert await asyncio.to_thread(ledger.drain) == 1
    assert ledger.pending() == 0


@pytest.mark.parametrize("value", ["0", "65", "four"])
def test_a_shard_count_out_of_range_stops_the_process_with_a_clear_error(value):
    env = {
        **os.environ,
        "GATEWAY_LEDGER_SHARDS": value,
        "DJANGO_SETTINGS_MODULE": "gatewaysite.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert (
        f"GATEWAY_LEDGER_SHARDS={value}" in done.stderr
        or "GATEWAY_LEDGER_SHARDS='four'" in done.stderr
    )
