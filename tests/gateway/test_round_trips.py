"""Redis round trips: a cache miss makes two (the ledger record travels with the settle),
scripts unknown to Redis are loaded and run once, concurrent round trips share a pipeline,
a record whose push fails waits in the spool, and replies come back as Redis sends them."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from django.test import AsyncClient
from redis.asyncio.client import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway import ledger, roundtrip, runtime
from gateway.admission import ADMIT
from gateway.models import UsageRecord
from gateway.roundtrip import RoundTrip
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.processes import one_redis_only, requires_redis_server

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "count my trips"}]}


@pytest.fixture
def trips(monkeypatch):
    """Every round trip to Redis from this process: ('pipeline', n commands) or a command."""
    seen: list[tuple[str, int | str]] = []
    execute, command = roundtrip.execute, Redis.execute_command

    async def counted_execute(redis, commands):
        seen.append(("pipeline", len(commands)))
        return await execute(redis, commands)

    async def counted_command(self, *args, **kwargs):
        seen.append(("command", str(args[0])))
        return await command(self, *args, **kwargs)

    monkeypatch.setattr(roundtrip, "execute", counted_execute)
    monkeypatch.setattr(Redis, "execute_command", counted_command)
    return seen


@pytest.fixture
def redis_away(monkeypatch):
    """Every pipeline fails as when Redis is unreachable; undo() ends it."""

    async def unreachable(redis, commands):
        raise RedisConnectionError("Redis is away")

    monkeypatch.setattr(roundtrip, "execute", unreachable)
    return monkeypatch


def setup_team() -> str:
    team = make_team("acme", rpm_limit=1000, tpm_limit=10_000_000)
    feature = make_feature(team, "chatbot")
    make_model("sim-model", make_provider(), input_price="1", output_price="2")
    make_budget(team, daily_limit_usd="10")
    make_budget(team, feature, monthly_limit_usd="100")
    return make_key(team, rpm_limit=1000)[1]


async def ask(secret: str, prompt: str = "count my trips"):
    body = {**BODY, "messages": [{"role": "user", "content": prompt}]}
    return await AsyncClient().post(
        "/v1/chat/completions", body, content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot",
                 "X-Gateway-Cache-TTL": "60"},
    )  # fmt: skip


async def test_a_cache_miss_makes_two_round_trips(trips):
    secret = await asyncio.to_thread(setup_team)
    await ask(secret, "warm the config snapshot")
    trips.clear()
    response = await ask(secret)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Cache"] == "miss"
    assert trips == [
        # admission (rate limits, cache lookup, reservation), in-flight entry, circuit state
        ("pipeline", 3),
        ("pipeline", 4),  # in-flight entry removed, settle, cache store, the ledger record
    ]
    assert ledger.pending() == 2
    trips.clear()
    hit = await ask(secret)
    assert hit.headers["X-Gateway-Cache"] == "hit"
    # admission (and in-flight entry); the record of the hit (and the entry removed)
    assert trips == [("pipeline", 3), ("pipeline", 2)]


async def test_a_script_redis_forgot_is_loaded_and_run_once():
    redis = runtime.aredis()
    await redis.script_flush()
    trip = RoundTrip(redis)
    counted = trip.add("INCR", "gw:test:counter")
    limited = trip.script(ADMIT, ["gw:test:bucket"], [1, 0, 10, 1, 60_000, "r", 0, 1000])
    read = trip.add("GET", "gw:test:counter")
    replies = await trip.send()
    assert replies[counted] == 1 and replies[read] == b"1"  # not repeated by the reload
    assert replies[limited] == [b"ok"]
    assert await redis.hget("gw:test:bucket", "tokens") == b"9"
    again = RoundTrip(redis)
    again.script(ADMIT, ["gw:test:bucket"], [1, 0, 10, 1, 60_000, "r", 0, 1000])
    await again.send()
    assert float(await redis.hget("gw:test:bucket", "tokens")) == pytest.approx(8, abs=0.01)


async def test_a_script_runs_on_the_node_that_does_not_know_it_wherever_a_load_would_land(
    monkeypatch,
):
    """A replica just promoted has none of the scripts (SCRIPT LOAD is not replicated), and a
    cluster client sends SCRIPT LOAD to the primaries it knew, which during a failover need
    not be the one holding the key: a settle failed so in CI. Here a load lands nowhere."""
    redis = runtime.aredis()
    await redis.script_flush()

    async def load_elsewhere(script):
        return roundtrip.sha(script)

    monkeypatch.setattr(redis, "script_load", load_elsewhere)
    trip = RoundTrip(redis)
    limited = trip.script(ADMIT, ["gw:test:bucket"], [1, 0, 10, 1, 60_000, "r", 0, 1000])
    assert (await trip.send())[limited] == [b"ok"]
    # run by its source, it is cached where it ran: the next round trip goes by its SHA1 alone
    args = ("gw:test:bucket", 1, 0, 10, 1, 60_000, "r2", 0, 1000)
    (by_sha,) = await roundtrip.execute(redis, [("EVALSHA", roundtrip.sha(ADMIT), 1, *args)])
    assert by_sha == [b"ok"]
    await redis.script_flush()
    assert await roundtrip.run_script(redis, "return KEYS[1] .. ARGV[1]", ["k"], ["v"]) == b"kv"


async def test_a_failed_command_raises_its_error():
    redis = runtime.aredis()
    await redis.set("gw:test:text", b"not a number")
    trip = RoundTrip(redis)
    trip.add("INCR", "gw:test:text")
    with pytest.raises(Exception, match="not an integer"):
        await trip.send()


@one_redis_only
async def test_round_trips_sent_in_the_same_turn_share_one_pipeline(trips):
    redis = runtime.aredis()
    await redis.delete("gw:test:shared")
    trips.clear()

    async def one(n: int) -> list:
        trip = RoundTrip(redis)
        trip.add("INCRBY", "gw:test:shared", n)
        trip.add("ECHO", f"request {n}")
        return await trip.send()

    tasks = [asyncio.create_task(one(n)) for n in range(1, 41)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # a client that went away: its commands and everyone else's still run
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert trips == [("pipeline", 80)]
    assert isinstance(results[0], asyncio.CancelledError)
    for n, replies in enumerate(results[1:], start=2):
        assert replies[1] == f"request {n}".encode()  # each gets its own replies, in its order
    assert int(await redis.get("gw:test:shared")) == sum(range(1, 41))  # the cancelled one too


@one_redis_only
async def test_a_shared_pipeline_that_fails_fails_every_round_trip_in_it(redis_away):
    redis = runtime.aredis()

    async def one() -> None:
        trip = RoundTrip(redis)
        trip.add("GET", "gw:test:anything")
        await trip.send()

    results = await asyncio.gather(*(one() for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    redis_away.undo()
    trip = RoundTrip(redis)
    trip.add("ECHO", "later")
    assert await trip.send() == [b"later"]  # the next turn opens a new pipeline


def _record(team_id: int, n: int) -> dict:
    return {
        "request_id": f"req_group_{n}",
        "created_at": "2026-11-27T12:00:00+00:00",
        "team_id": team_id,
        "feature_id": None,
        "api_key_id": None,
        "requested_model": "m",
        "served_model": "m",
        "provider": "p",
        "attempts": 1,
        "attempt_log": [],
        "stream": False,
        "input_tokens": 1,
        "output_tokens": 1,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": "0.0000000100",
        "saved_usd": "0",
        "estimated": False,
        "unpriced": False,
        "latency_ms": 1,
        "status": "ok",
        "http_status": 200,
        "error_type": "",
        "cache": "miss",
    }


async def test_records_finishing_together_share_one_push_and_survive_cancellation(trips):
    team = await asyncio.to_thread(make_team)
    tasks = [asyncio.create_task(ledger.enqueue(_record(team.id, n))) for n in range(50)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # a client that went away: its record is pushed all the same
    await asyncio.gather(*tasks, return_exceptions=True)
    assert trips == [("pipeline", 50)]
    assert ledger.pending() == 50
    assert await asyncio.to_thread(ledger.drain) == 50
    total = await asyncio.to_thread(
        lambda: sum(UsageRecord.objects.values_list("cost_usd", flat=True), Decimal(0))
    )
    assert total == Decimal("0.0000005")


@requires_redis_server
async def test_more_commands_in_flight_than_pooled_connections_wait_for_one(own_redis):
    """A thousand open streams settling at once: commands queue for a connection."""
    redis = runtime.make_async_redis(own_redis.url)
    try:
        replies = await asyncio.gather(*(redis.incr("gw:test:many") for _ in range(1000)))
        assert sorted(replies) == list(range(1, 1001))
        assert redis.connection_pool.max_connections < 1000
    finally:
        await redis.aclose()


async def test_a_record_whose_push_fails_waits_in_the_spool_even_if_its_request_is_gone(
    redis_away,
):
    team = await asyncio.to_thread(make_team)
    ledger.spool().items.clear()
    tasks = [asyncio.create_task(ledger.enqueue(_record(team.id, n))) for n in range(3)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(ledger.spool().items) == 3  # the cancelled request's record too
    redis_away.undo()
    assert await asyncio.to_thread(ledger.drain) == 3
    assert ledger.spool().items == []


async def test_a_push_redis_refuses_is_spooled_and_the_rest_of_the_trip_runs():
    redis = runtime.aredis()
    record = _record(1, 1)
    queue = ledger.queue_key(ledger.shard_of(record))
    await redis.set(queue, b"not a list")  # RPUSH on it: WRONGTYPE
    ledger.spool().items.clear()
    try:
        trip = RoundTrip(redis)
        trip.add("SET", "gw:test:beside", b"1")
        ledger.queue_push(trip, record)
        with pytest.raises(Exception, match="WRONGTYPE"):
            await trip.send()
        assert len(ledger.spool().items) == 1
        assert await redis.get("gw:test:beside") == b"1"
    finally:
        await redis.delete(queue)
        ledger.spool().items.clear()


@one_redis_only
async def test_replies_come_back_as_redis_sends_them_an_error_in_its_place():
    redis = runtime.aredis()
    await redis.delete("gw:test:raw", "gw:test:list", "gw:test:hash")
    replies = await roundtrip.execute(
        redis,
        [
            ("SET", "gw:test:raw", "text", "EX", 60),
            ("HMGET", "gw:test:hash", "a", "b"),
            ("RPUSH", "gw:test:list", b"x"),
            ("INCR", "gw:test:raw"),
            ("EVALSHA", "0" * 40, 0),
            ("GET", "gw:test:raw"),
        ],
    )
    assert replies[:3] == [b"OK", [None, None], 1]
    assert isinstance(replies[3], ResponseError) and not isinstance(replies[3], NoScriptError)
    assert isinstance(replies[4], NoScriptError)
    assert replies[5] == b"text"  # the commands after an error still ran
    assert 0 < await redis.ttl("gw:test:raw") <= 60
