"""Per-process clients: Redis (asyncio and sync) and the pooled upstream HTTP client.

This is the one place that creates them. Async clients are bound to an event loop, so they
are kept per running loop (in production there is exactly one loop per worker process; the
test client and Celery's eager mode may spin up short-lived loops). With no REDIS_URL the
clients talk to an in-process fakeredis server with Lua, shared by every client of this
process (the embedded demo mode: one process only).
"""

from __future__ import annotations

import asyncio
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any

import httpx
import redis as redis_sync
import redis.asyncio as redis_async
from django.conf import settings
from fakeredis import FakeAsyncRedis, FakeConnection, FakeRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from gateway import fastpath
from gateway.fastpath.multiplex import Multiplexed
from gateway.fastpath.transport import AiohttpTransport
from gateway.process import state
from gateway.redisurl import ClusterConfig, SentinelConfig, cluster_config, sentinel_config

__all__ = [
    "FakeConnection",
    "aredis",
    "close_loop_clients",
    "http_client",
    "multiplexed",
    "read_many",
    "spawn",
    "sync_redis",
]

_EMBEDDED_HOST = "embedded"
_EMBEDDED_PORT = 6379


class _LoopClients:
    """Clients owned by one event loop."""

    def __init__(self) -> None:
        self.redis: redis_async.Redis | None = None
        self.http: httpx.AsyncClient | None = None
        self.multiplexed: dict[tuple, Multiplexed] = {}  # by server address, db and user
        self.tasks: set[asyncio.Task] = set()  # background work that must not be collected


def _loop_clients() -> _LoopClients:
    """The running loop's clients, kept in the process state (gateway/process.py).

    The loop asked about last is remembered with its clients (`last_loop`): a request asks
    about ten times, always from the same loop, and the weak-keyed registry builds a weak
    reference for every lookup (2 % of a request's CPU in the profile). Checked against the
    running loop on every use, so another thread or loop simply misses it."""
    loop = asyncio.get_running_loop()
    process = state()
    last = process.last_loop
    if last is not None and last[0]() is loop:
        return last[1]
    registry = process.loops
    clients = registry.get(loop)
    if clients is None:
        clients = registry[loop] = _LoopClients()
    process.last_loop = (weakref.ref(loop), clients)
    return clients


def _socket_timeout() -> float:
    return float(getattr(settings, "REDIS_SOCKET_TIMEOUT_S", 2.0))


def make_async_redis(url: str) -> redis_async.Redis:
    """A client that gives up fast: when Redis is away, one quick retry and then the error,
    so that requests fail closed (or open) in milliseconds instead of queueing on backoffs.

    Its pool blocks: with more commands in flight than connections (a thousand open streams
    each settling), a command waits up to the socket timeout for a free connection instead
    of failing at once with "Too many connections".
    """
    options = {
        "socket_timeout": _socket_timeout(),
        "socket_connect_timeout": _socket_timeout(),
        "health_check_interval": 30,
        "retry": AsyncRetry(ConstantBackoff(0.01), retries=1),
    }
    sentinel = sentinel_config(url)
    if sentinel is not None:  # the primary, looked up again after a failover
        return async_primary(sentinel, max_connections=256, **options)
    cluster = cluster_config(url)
    if cluster is not None:
        return async_cluster(cluster, max_connections=256, **options)
    pool = redis_async.BlockingConnectionPool.from_url(
        url, max_connections=256, timeout=_socket_timeout(), **options
    )
    return redis_async.Redis.from_pool(pool)


def async_from_url(url: str, **options) -> redis_async.Redis:
    """An asyncio client for `url`: a plain URL's, a Sentinel URL's primary, or a cluster's."""
    sentinel = sentinel_config(url)
    if sentinel is not None:
        return async_primary(sentinel, **options)
    cluster = cluster_config(url)
    if cluster is not None:
        return async_cluster(cluster, **options)
    return redis_async.Redis.from_url(url, **options)


def async_cluster(cluster: ClusterConfig, **options) -> redis_async.Redis:
    """redis-py's asyncio cluster client: it routes each command to the node that owns its
    key's slot, and follows MOVED and ASK when slots move."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    options.pop("health_check_interval", None)
    return RedisCluster(  # type: ignore[return-value]  # the commands the gateway uses
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
        **cluster.client_kwargs(),
        **options,
    )


def clustered(redis) -> bool:
    """Whether `redis` is a cluster client (its round trips split by node)."""
    return not hasattr(redis, "connection_pool")


def async_primary(sentinel: SentinelConfig, **options) -> redis_async.Redis:
    from redis.asyncio.sentinel import Sentinel

    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    manager = Sentinel(
        list(sentinel.sentinels), sentinel_kwargs={**timeouts, **sentinel.sentinel_kwargs()}
    )
    return manager.master_for(sentinel.service, **sentinel.client_kwargs(), **options)


def aredis() -> redis_async.Redis:
    """The asyncio Redis client of the running loop (bytes in, bytes out)."""
    clients = _loop_clients()
    if clients.redis is None:
        if settings.REDIS_URL:
            clients.redis = make_async_redis(settings.REDIS_URL)
        else:
            clients.redis = FakeAsyncRedis(
                host=_EMBEDDED_HOST, port=_EMBEDDED_PORT, lua_modules=set()
            )
    return clients.redis


def multiplexed(redis: redis_async.Redis) -> Multiplexed | None:
    """The running loop's pipelined connection to the server of `redis` (a client of
    `make_async_redis` or `aredis`), for the round trips; None when its connections are not
    plain TCP (TLS, a Unix socket, the embedded stand-in): those go through its pool. None
    for a cluster too: its client splits a round trip by node."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None:
        return None
    if pool.connection_class is not redis_async.Connection or not fastpath.enabled():
        return None
    options = pool.connection_kwargs
    address = (
        options.get("host", "localhost"),
        options.get("port", 6379),
        options.get("db", 0),
        options.get("username"),
        options.get("password"),
    )
    clients = _loop_clients()
    found = clients.multiplexed.get(address)
    if found is None:
        retry = options.get("retry")
        found = clients.multiplexed[address] = Multiplexed(
            host=address[0],
            port=address[1],
            db=address[2],
            username=address[3],
            password=address[4],
            timeout=options.get("socket_timeout") or _socket_timeout(),
            retries=retry.get_retries() if retry is not None else 0,
        )
    return found


@cache
def sync_redis() -> redis_sync.Redis:
    """The synchronous Redis client (admin pages, Celery tasks, management commands)."""
    if settings.REDIS_URL:
        options: dict[str, Any] = {
            "socket_timeout": _socket_timeout(),
            "socket_connect_timeout": _socket_timeout(),
            "retry": Retry(ConstantBackoff(0.05), retries=2),
        }
        cluster = cluster_config(settings.REDIS_URL)
        if cluster is not None:
            from redis.cluster import ClusterNode, RedisCluster

            return RedisCluster(  # type: ignore[return-value]  # the commands the gateway uses
                startup_nodes=[ClusterNode(host, port) for host, port in cluster.nodes],
                **cluster.client_kwargs(),
                **options,
            )
        sentinel = sentinel_config(settings.REDIS_URL)
        if sentinel is None:
            return redis_sync.Redis.from_url(settings.REDIS_URL, **options)
        from redis.sentinel import Sentinel

        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        manager = Sentinel(
            list(sentinel.sentinels), sentinel_kwargs={**timeouts, **sentinel.sentinel_kwargs()}
        )
        return manager.master_for(sentinel.service, **sentinel.client_kwargs(), **options)
    return FakeRedis(host=_EMBEDDED_HOST, port=_EMBEDDED_PORT, lua_modules=set())


def read_many(keys: list[str]) -> list:
    """GET of many keys in one round trip (MGET); on a cluster one per node, since the keys
    of different teams live in different slots."""
    redis = sync_redis()
    if clustered(redis):
        return redis.mget_nonatomic(keys)  # type: ignore[attr-defined]
    return redis.mget(keys)


class ClusterConnectionFactory:
    """django-redis's connection factory for a `redis+cluster://` URL (settings.CACHES):
    the process's sync cluster client. django-redis has no cluster client of its own."""

    def __init__(self, options: dict) -> None:
        self.options = options

    def connect(self, url: str) -> redis_sync.Redis:
        return sync_redis()

    def disconnect(self, connection) -> None:
        pass  # the process's own client, shared with the rest of it


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: provider APIs set no cookie the gateway should send back."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass  # httpx builds a urllib Request and an email Message per response to read them

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


_NO_COOKIES = _NoCookies()


class UpstreamClient(httpx.AsyncClient):
    """httpx's client for provider calls, without a cookie jar."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies) -> None:
        pass


def http_client() -> httpx.AsyncClient:
    """The pooled httpx client of the running loop, shared by every provider adapter.

    httpx's API over an aiohttp connection pool (`AiohttpTransport`: a fifth of the CPU of
    httpx's own transport per upstream call). The adapters hand their requests to the
    client's transport directly (`ProviderAdapter._send`), with timeouts from the
    Provider's own settings; anything else calling the client gets no cookie jar either.
    """
    clients = _loop_clients()
    if clients.http is None:
        # GATEWAY_FAST_PATH=0: httpx's own transport (gateway/fastpath/README.md).
        transport = AiohttpTransport() if fastpath.enabled() else None
        clients.http = UpstreamClient(transport=transport, timeout=httpx.Timeout(60.0, connect=5.0))
    return clients.http


def spawn(coro) -> asyncio.Task:
    """Run `coro` in the background on the running loop, keeping it alive until it is done."""
    tasks = _loop_clients().tasks
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


@cache
def _db_executor(name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gateway-db-{name}")


def _with_usable_connection(fn, *args):
    from django.db import close_old_connections

    close_old_connections()  # drop a connection the database closed (restart, max age)
    try:
        return fn(*args)
    except Exception:
        close_old_connections()
        raise


def submit_db(lane: str, fn, *args):
    """Like `run_db`, but returns the concurrent Future (for work several callers share)."""
    return _db_executor(lane).submit(_with_usable_connection, fn, *args)


async def run_db(lane: str, fn, *args):
    """Run blocking ORM work off the event loop, in the process's one thread for `lane`.

    One long-lived thread per lane ("config" reads, "ledger" writes) keeps one reusable
    database connection each, so the hot path never waits on a connect, and the ledger's
    batch writes never hold up a config refresh.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _db_executor(lane), partial(_with_usable_connection, fn, *args)
    )


def wait_db_lanes(timeout: float = 10.0) -> None:
    """Return once the lanes' threads have done everything queued so far."""
    for lane in ("config", "ledger"):
        _db_executor(lane).submit(lambda: None).result(timeout=timeout)


def close_db_threads() -> None:
    """Close the database connections held by the lanes' threads (on shutdown)."""
    from django.db import connections

    for lane in ("config", "ledger"):
        _db_executor(lane).submit(connections.close_all).result(timeout=10)


async def close_loop_clients() -> None:
    """Close the running loop's clients (on shutdown, and between tests)."""
    process = state()
    clients = process.loops.pop(asyncio.get_running_loop(), None)
    if clients is None:
        return
    if process.last_loop is not None and process.last_loop[1] is clients:
        process.last_loop = None
    if clients.tasks:
        await asyncio.gather(*clients.tasks, return_exceptions=True)
    if clients.http is not None:
        await clients.http.aclose()
    if clients.redis is not None:
        await clients.redis.aclose()
    for connection in clients.multiplexed.values():
        await connection.aclose()
