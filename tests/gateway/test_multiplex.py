"""The round trips' pipelined connection (gateway/fastpath/multiplex.py): replies matched in order
across concurrent round trips, the handshake, and what a lost, silent or closed connection
does, against real Redis and against a loopback server that misbehaves on cue."""

from __future__ import annotations

import asyncio
import time

import hiredis
import pytest
from fakeredis import FakeAsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import roundtrip, runtime
from gateway.fastpath.multiplex import Multiplexed
from tests.processes import one_redis_only, requires_real_redis


class ScriptedRedis:
    """A loopback server speaking Redis's protocol. It answers +PONG to PING and +OK to
    anything else, except: STALL, after which it never answers on that connection again, and
    DROP, on which it closes the connection (the first `drops` times)."""

    def __init__(self, drops: int = 0) -> None:
        self.connections = 0
        self.stalled = 0
        self.drops = drops
        self.commands: list[list[bytes]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader, writer) -> None:
        self.connections += 1
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                self.commands.append(command)
                word = command[0].upper()
                if word == b"STALL":
                    self.stalled += 1
                    await reader.read()  # until the client gives up and closes
                    writer.close()
                    return
                if word == b"DROP" and self.drops:
                    self.drops -= 1
                    writer.close()
                    return
                writer.write(b"+PONG\r\n" if word == b"PING" else b"+OK\r\n")

    async def stop(self) -> None:
        self.server.close()


@pytest.fixture
async def scripted():
    server = ScriptedRedis()
    address = await server.start()
    yield server, address
    await server.stop()


def connect(address: str, **options) -> Multiplexed:
    host, port = address.split(":")
    return Multiplexed(host=host, port=int(port), **options)


async def test_a_reply_that_never_comes_times_out_once_for_the_whole_pipeline(scripted):
    """One timeout covers every reply of a pipeline; on it the connection is closed (a late
    reply would be matched to the next command) and the pipeline is sent once more on a new
    one, as redis-py retries its own (the budget scripts and the ledger are safe to run
    twice: a request id is held and settled once)."""
    server, address = scripted
    redis = connect(address, timeout=0.3, retries=1)
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        await redis.execute([("ECHO", "a"), ("STALL",), ("ECHO", "b")])
    assert 0.6 <= time.monotonic() - started < 2
    assert (server.stalled, server.connections) == (2, 2)
    assert await redis.execute([("ECHO", "again")]) == [b"OK"]
    assert server.connections == 3  # a stalled connection is not used again
    await redis.aclose()


async def test_a_connection_closed_under_waiting_round_trips_fails_them_and_they_retry(scripted):
    server, address = scripted
    server.drops = 1
    redis = connect(address, timeout=2, retries=1)
    first = asyncio.ensure_future(redis.execute([("ECHO", "1"), ("DROP",)]))
    second = asyncio.ensure_future(redis.execute([("ECHO", "2")]))
    assert await asyncio.gather(first, second) == [[b"OK", b"OK"], [b"OK"]]
    assert server.connections == 2  # both were sent again on one new connection
    server.drops = 1
    redis.retries = 0
    with pytest.raises(RedisConnectionError):
        await redis.execute([("DROP",)])
    await redis.aclose()


async def test_the_connection_authenticates_and_selects_its_database_first(scripted):
    server, address = scripted
    redis = connect(address, db=3, username="gateway", password="s3cret")
    assert await redis.execute([("ECHO", "x")]) == [b"OK"]
    assert server.commands[:3] == [[b"AUTH", b"gateway", b"s3cret"], [b"SELECT", b"3"],
                                   [b"ECHO", b"x"]]  # fmt: skip
    await redis.aclose()


async def test_concurrent_connects_share_one_connection(scripted):
    server, address = scripted
    redis = connect(address)
    replies = await asyncio.gather(*(redis.execute([("ECHO", str(n))]) for n in range(20)))
    assert replies == [[b"OK"]] * 20 and server.connections == 1
    await redis.aclose()


async def test_nothing_listening_is_a_connection_error():
    redis = connect("127.0.0.1:1", timeout=0.5, retries=1)
    with pytest.raises(RedisConnectionError):
        await redis.execute([("PING",)])


@requires_real_redis
@one_redis_only
async def test_many_round_trips_in_flight_on_one_connection_each_get_their_own_replies():
    redis = runtime.aredis()
    connection = runtime.multiplexed(redis)
    assert connection is not None
    await redis.delete("gw:test:mux")

    async def one(n: int) -> list:
        await asyncio.sleep(n % 3 / 1000)  # in several waves, overlapping on the wire
        return await roundtrip.execute(
            redis, [("INCRBY", "gw:test:mux", n), ("ECHO", f"reply {n}"), ("EVALSHA", "0" * 40, 0)]
        )

    results = await asyncio.gather(*(one(n) for n in range(300)))
    for n, (_, echoed, error) in enumerate(results):
        assert echoed == f"reply {n}".encode()
        assert isinstance(error, NoScriptError) and isinstance(error, ResponseError)
    assert int(await redis.get("gw:test:mux")) == sum(range(300))
    assert len(runtime._loop_clients().multiplexed) == 1


async def test_clients_that_are_not_plain_tcp_keep_their_pool():
    assert runtime.multiplexed(FakeAsyncRedis(host="embedded", lua_modules=set())) is None
    unix = runtime.make_async_redis("unix:///tmp/none.sock")
    assert runtime.multiplexed(unix) is None
    await unix.aclose()
