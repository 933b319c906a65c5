"""Several Redis commands in one round trip, and concurrent requests' round trips in one.

A request used to make seven sequential Redis round trips. The pipeline now queues what it
needs before the upstream call (rate limits, cache lookup, circuit state) and after it
(settle, cache store, ledger record) on a `RoundTrip`, and sends each group as one
non-transactional pipeline. Each command still runs on its own: a script keeps its own
atomicity, nothing is atomic across commands.

Round trips sent in the same turn of the event loop, by as many requests as are in flight,
share one pipeline on one connection: under load a worker pays one socket write and one
read for a whole wave of requests, not one each, and a burst of requests needs a few
pooled connections, not one per request. Each `send()` still gets only its own replies,
and a request that is cancelled while it waits does not cancel the others' commands.

Scripts go by their SHA1 (EVALSHA). When Redis does not know one (it restarted, its scripts
were flushed, or it is a replica just promoted: replicas do not get SCRIPT LOAD), that
command alone runs again by its source (EVAL, which also caches it there); the others
already ran and are not repeated. Not `SCRIPT LOAD` then EVALSHA: on a cluster, the load
goes to the primaries the client knew, which during a failover need not hold the slot.

Commands are queued as Redis's own words (`add("SET", key, value, "EX", 60)`) and replies
come back as Redis sends them (`b"OK"`, integers, bytes, lists). `execute` sends a shared
pipeline on the worker's one pipelined connection to that Redis (gateway/fastpath/multiplex.py), or,
for TLS, Unix sockets and the embedded stand-in, on a connection of the client's pool with
hiredis packing the commands and one timeout for the whole exchange. redis-py's own
`Pipeline` builds a command object per call, packs in Python and starts a timeout per reply,
which was most of its share of a request's CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import runtime
from gateway.process import state

log = logging.getLogger(__name__)
MAX_SHARED = 512  # commands in one shared pipeline; a larger wave opens the next one


@cache
def sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class ScriptQueue(Protocol):
    """What queues a script: a `RoundTrip`, or anything that only borrows its arguments."""

    def script(self, source: str, keys: list[str], args: list[Any]) -> int: ...


class RoundTrip:
    def __init__(self, redis) -> None:
        self.redis = redis
        self._calls: list[tuple[Any, ...]] = []
        self._scripts: dict[int, str] = {}  # index of an EVALSHA: its source
        self._fallbacks: list[tuple[int, Callable[[], None]]] = []
        # Set by `send()`: the shared pipeline's replies for this trip. It completes even
        # when the request that sent it is cancelled while it waits, since the pipeline
        # runs for the others all the same.
        self.landed: asyncio.Future | None = None

    def add(self, *command: Any) -> int:
        """Queue one command, in Redis's words (`"HMGET", key, "a", "b"`); returns the index
        of its reply."""
        self._calls.append(command)
        return len(self._calls) - 1

    def script(self, source: str, keys: list[str], args: list[Any]) -> int:
        """Queue a Lua script; returns the index of its reply."""
        self._scripts[len(self._calls)] = source
        return self.add("EVALSHA", sha(source), len(keys), *keys, *args)

    def if_not_done(self, index: int, fallback: Callable[[], None]) -> None:
        """Call `fallback()` if the command at `index` does not run: Redis unreachable or the
        command refused. It is called whatever becomes of the request that sent the round
        trip, even one cancelled while it waited (what must not be lost uses this). For
        plain commands only: a script Redis does not know is run again by `send()`, after
        its fallback would already have run."""
        self._fallbacks.append((index, fallback))

    async def send(self) -> list[Any]:
        """Send everything queued; the replies in queue order. The first command that failed
        raises its error (a connection error fails them all)."""
        if not self._calls:
            return []
        self.landed = _join(self.redis, self._calls, self._fallbacks)
        replies = await asyncio.shield(self.landed)  # cancelling one does not cancel the rest
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                numkeys_keys_args = self._calls[i][2:]
                replies[i] = await self.redis.execute_command(
                    "EVAL", self._scripts[i], *numkeys_keys_args
                )
            elif isinstance(reply, Exception):
                raise reply
        return replies


@dataclass
class _Shared:
    """The pipeline the round trips of one loop turn join."""

    redis: Any
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    waiters: list[tuple[int, int, asyncio.Future]] = field(default_factory=list)
    fallbacks: list[tuple[int, Callable[[], None]]] = field(default_factory=list)


def _join(redis, calls: list, fallbacks: list) -> asyncio.Future:
    """Join this loop turn's shared pipeline; the future of `calls`' replies."""
    loop = asyncio.get_running_loop()
    key = (loop, id(redis))
    open_trips = state().shared_trips  # the pipelines joined this turn (gateway/process.py)
    shared = open_trips.get(key)
    if shared is None or len(shared.calls) >= MAX_SHARED:
        shared = open_trips[key] = _Shared(redis)
        # runs once this turn's requests have joined
        runtime.spawn(_send_shared(open_trips, key, shared))
    replies = loop.create_future()
    start = len(shared.calls)
    shared.waiters.append((start, len(calls), replies))
    shared.fallbacks.extend((start + index, fallback) for index, fallback in fallbacks)
    shared.calls.extend(calls)
    return replies


async def _send_shared(open_trips: dict, key, shared: _Shared) -> None:
    if open_trips.get(key) is shared:
        del open_trips[key]  # round trips from now on start the next pipeline
    try:
        replies = await execute(shared.redis, shared.calls)
    except asyncio.CancelledError:  # the loop is shutting down
        _fall_back(shared.fallbacks)
        for _, _, waiter in shared.waiters:
            waiter.cancel()
        raise
    except Exception as exc:  # Redis unreachable: every round trip in it fails alike
        _fall_back(shared.fallbacks)
        for _, _, waiter in shared.waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        return
    _fall_back((i, fb) for i, fb in shared.fallbacks if isinstance(replies[i], Exception))
    for start, count, waiter in shared.waiters:
        if not waiter.done():
            waiter.set_result(replies[start : start + count])


async def execute(redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send `commands` as one pipeline; their replies, an error reply as its exception in
    its place. A connection error or timeout is retried as redis-py retries its own
    pipelines (the client's `retry`), then raised.

    On the loop's pipelined connection to the client's server (gateway/fastpath/multiplex.py), or,
    for TLS, Unix sockets and the embedded stand-in, on a connection of the client's pool. On
    a cluster, redis-py's cluster pipeline sends each node its share, and its reply
    conversions apply (a SET's `OK` comes back as True).
    """
    connection = runtime.multiplexed(redis)
    if connection is not None:
        return await connection.execute(commands)
    if runtime.clustered(redis):
        return await _execute_on_cluster(redis, commands)
    pool = redis.connection_pool
    connection = await pool.get_connection()
    try:
        return await connection.retry.call_with_retry(
            lambda: _exchange(connection, commands), lambda error: connection.disconnect()
        )
    finally:
        await pool.release(connection)


async def _execute_on_cluster(redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Split by node, each node's share as one pipeline (redis-py's cluster pipeline).

    With `raise_on_error=False` that pipeline hands a node's connection error or timeout
    back in place of its commands' replies and retries nothing (its own retry runs only when
    it raises): during a primary's failover, settles failed and the budget counters fell
    behind the ledger. Those commands are sent again, after the client has dropped its
    connections and relearns the slots, as often as its `retry` allows (redis-py's own way,
    0.25 s apart). One Redis re-sends a whole pipeline alike (`execute`), and so does
    redis-py's cluster pipeline when a node's connection fails (it sends again every command
    whose reply was an error or falsy, those of live nodes included), so every script is
    safe to run twice: a spend's settled marker (with a hold or without), an admission's
    hold keyed by its request."""
    from redis.asyncio.cluster import RedisCluster

    replies: list[Any] = [None] * len(commands)
    todo = list(range(len(commands)))
    tries = redis.retry.get_retries()
    while True:
        pipe = redis.pipeline(transaction=False)
        for i in todo:
            pipe.execute_command(*commands[i])
        again = []
        for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
            if isinstance(reply, RedisCluster.ERRORS_ALLOW_RETRY):
                again.append(i)
        if not again or tries <= 0:
            return replies
        tries -= 1
        todo = again
        await redis.aclose()  # the next pipeline learns the slots again
        await asyncio.sleep(0.25)


async def _exchange(connection, commands: list[tuple[Any, ...]]) -> list[Any]:
    await connection.send_packed_command(b"".join(map(pack_command, commands)))
    replies: list[Any] = []
    try:
        async with asyncio.timeout(connection.socket_timeout):
            for _ in commands:
                try:  # math.inf: no timeout per reply, the one above covers them all
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:
                    replies.append(error)
    except TimeoutError:  # the read was cancelled, and redis-py closed the connection
        raise RedisTimeoutError("Timeout reading from Redis") from None
    return replies


async def run_script(redis, source: str, keys: list[str], args: list[Any]) -> Any:
    """One Lua script in a round trip of its own: by its SHA1, by its source when the Redis
    that holds its keys does not know it (see the module's docstring)."""
    try:
        return await redis.evalsha(sha(source), len(keys), *keys, *args)
    except NoScriptError:
        return await redis.eval(source, len(keys), *keys, *args)


def _fall_back(fallbacks) -> None:
    for _, fallback in fallbacks:
        try:
            fallback()
        except Exception:
            log.exception("a round trip's fallback failed")
