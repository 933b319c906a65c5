"""The per-provider circuit breaker in Redis: open after N failures, skip while open, one probe
after the cooldown, closed by its success, re-opened by its failure."""

from __future__ import annotations

import asyncio

import pytest

from gateway import circuit, runtime
from gateway.circuit import EVENTS_KEY, State, check, record_failure, record_success

FAILURES = 3
COOLDOWN_S = 10
T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(autouse=True)
def clock(monkeypatch, settings) -> Clock:
    settings.GATEWAY = {
        **settings.GATEWAY, "CIRCUIT_FAILURES": FAILURES, "CIRCUIT_COOLDOWN_S": COOLDOWN_S,
    }  # fmt: skip
    fake = Clock()
    monkeypatch.setattr(circuit, "_now_ms", fake)
    return fake


@pytest.fixture
async def redis():
    client = runtime.aredis()
    yield client
    await runtime.close_loop_clients()


async def fail(redis, times: int, provider: str = "openai") -> list[bool]:
    return [await record_failure(redis, provider) for _ in range(times)]


async def open_until(redis, provider: str = "openai") -> int:
    return int(await redis.hget(circuit.PREFIX + provider, "open_until"))


async def test_a_fresh_provider_is_closed_and_clean(redis):
    assert await check(redis, "openai") == (State.CLOSED, False)


async def test_it_stays_closed_below_the_failure_threshold(redis):
    assert await fail(redis, FAILURES - 1) == [False, False]
    assert await check(redis, "openai") == (State.CLOSED, True)
    assert await redis.hget(circuit.PREFIX + "openai", "fails") == b"2"


async def test_it_opens_on_the_nth_consecutive_failure(redis, clock):
    assert await fail(redis, FAILURES) == [False, False, True]
    assert await open_until(redis) == T0 + COOLDOWN_S * 1000
    assert (await check(redis, "openai"))[0] is State.OPEN


async def test_a_success_resets_the_failure_count(redis):
    await fail(redis, FAILURES - 1)
    state, dirty = await check(redis, "openai")
    await record_success(redis, "openai", state, dirty)
    assert await check(redis, "openai") == (State.CLOSED, False)
    assert await fail(redis, FAILURES - 1) == [False, False]


async def test_it_skips_the_provider_until_the_cooldown_is_over(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000 - 1
    assert (await check(redis, "openai"))[0] is State.OPEN
    assert await redis.exists(circuit.PREFIX + "openai:probe") == 0


async def test_exactly_one_probe_goes_through_after_the_cooldown(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000
    states = [s for s, _ in await asyncio.gather(*(check(redis, "openai") for _ in range(20)))]
    assert states.count(State.HALF_OPEN) == 1
    assert states.count(State.OPEN) == 19
    assert (await check(redis, "openai"))[0] is State.OPEN


async def test_a_successful_probe_closes_the_circuit(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000
    state, dirty = await check(redis, "openai")
    assert state is State.HALF_OPEN
    await record_success(redis, "openai", state, dirty)
    assert await redis.exists(circuit.PREFIX + "openai", circuit.PREFIX + "openai:probe") == 0
    assert await check(redis, "openai") == (State.CLOSED, False)


async def test_a_failed_probe_opens_the_circuit_for_another_cooldown(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000 + 5
    assert (await check(redis, "openai"))[0] is State.HALF_OPEN
    assert await record_failure(redis, "openai") is True
    assert await open_until(redis) == clock.ms + COOLDOWN_S * 1000
    assert (await check(redis, "openai"))[0] is State.OPEN
    # The failed probe's claim is gone: the next cooldown's end lets a new probe through.
    clock.ms += COOLDOWN_S * 1000
    assert (await check(redis, "openai"))[0] is State.HALF_OPEN


async def test_each_opening_pushes_an_event(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000
    await check(redis, "openai")
    await record_failure(redis, "openai")
    events = [circuit.parse_event(raw) for raw in await redis.lrange(EVENTS_KEY, 0, -1)]
    assert events == [
        {
            "provider": "openai",
            "opened_at": "2027-01-15T08:00:00+00:00",  # T0
            "kind": "opened",
            "reason": "consecutive_failures",
        },
        {
            "provider": "openai",
            "opened_at": "2027-01-15T08:00:10+00:00",  # T0 + the cooldown
            "kind": "opened",
            "reason": "consecutive_failures",
        },
    ]


async def test_a_successful_probe_pushes_the_closing(redis, clock):
    await fail(redis, FAILURES)
    clock.ms = T0 + COOLDOWN_S * 1000 + 5
    state, dirty = await check(redis, "openai")
    await record_success(redis, "openai", state, dirty)
    *_, closing = [circuit.parse_event(raw) for raw in await redis.lrange(EVENTS_KEY, 0, -1)]
    assert closing == {
        "provider": "openai",
        "opened_at": "2027-01-15T08:00:10.005000+00:00",
        "kind": "closed",
        "reason": "probe_succeeded",
    }


async def test_failures_below_the_threshold_push_no_event(redis):
    await fail(redis, FAILURES - 1)
    assert await redis.llen(EVENTS_KEY) == 0


async def test_circuits_are_per_provider(redis):
    await fail(redis, FAILURES, provider="openai")
    assert (await check(redis, "openai"))[0] is State.OPEN
    assert await check(redis, "anthropic") == (State.CLOSED, False)


async def test_a_failure_while_open_neither_extends_the_cooldown_nor_counts_an_opening(
    redis, clock
):
    await fail(redis, FAILURES)
    clock.ms = T0 + 1000
    assert await fail(redis, 1) == [False]
    assert await open_until(redis) == T0 + COOLDOWN_S * 1000
    assert await redis.llen(EVENTS_KEY) == 1
