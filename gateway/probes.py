"""The operator's endpoints: liveness (/healthz), readiness (/readyz) and /metrics.

/healthz does no I/O: it answers as long as the event loop does, so a load balancer or an
orchestrator restarts only a process that is really stuck. /readyz checks the two stores a
request needs (Redis, as a primary that takes writes, and the database) with a short timeout
each, so an instance that cannot
reach them is taken out of rotation rather than restarted; it answers 503 `draining` from
SIGTERM on (gateway/drain.py). It also reports, without failing on them, whether the Redis
holding the ledger queue persists it (`redis_persistence`) and how many migrations the
database lacks (`unapplied_migrations`), which are logged as WARNINGs at start too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from functools import partial

from adrf.views import APIView
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from redis.exceptions import ResponseError

from gateway import drain, metrics, runtime, schema_components
from gateway.errors import AuthenticationFailed, PermissionDenied, error_response
from gateway.redisurl import shared_key
from gateway.snapshot import store

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0


class HealthzView(APIView):
    @extend_schema(
        summary="Liveness: the process is up (no I/O)",
        responses={200: schema_components.HEALTH},
        auth=[],
        tags=["operations"],
    )
    async def get(self, request):
        return JsonResponse({"status": "ok"})


def _select_one() -> None:
    """Run in the config lane, which drops a connection that failed (runtime.run_db)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check(name: str, probe) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await probe()
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return "unavailable"
    return "ok"


READY_KEY = shared_key("readyz")


async def writable(redis) -> None:
    """The Redis answers as a primary that takes writes: a replica (a demoted primary after
    a failover, or a URL that names a replica) answers READONLY, and the instance is not
    ready, rather than answering 200 while every budgeted request fails. With a Sentinel URL
    the client looks the primary up again on that error, so the next check passes. On a
    cluster, a node that has lost any slot's owner (`cluster_state:fail`) is not ready either:
    the teams in those slots would be refused."""
    await redis.set(READY_KEY, b"1", px=10_000)
    if runtime.clustered(redis):
        state = (await redis.cluster_info()).get("cluster_state")
        if state != "ok":
            raise ResponseError(f"Redis Cluster state is {state!r}, not 'ok'")


async def redis_persistence(redis) -> str:
    """How the Redis holding the ledger queue persists it: `aof` (appendonly yes), `rdb`
    (snapshots only: a crash loses what was queued since the last one), `none`, `unknown`
    (CONFIG is disabled, as on some managed Redis) or `embedded` (the in-process stand-in)."""
    if not settings.REDIS_URL:
        return "embedded"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            appendonly = (await redis.config_get("appendonly")).get("appendonly")
            save = (await redis.config_get("save")).get("save")
    except ResponseError:
        return "unknown"  # CONFIG renamed or disabled
    except Exception:
        return "unavailable"
    if appendonly == "yes":
        return "aof"
    return "rdb" if save else "none"


_PERSISTENCE_RISK = {
    "none": "has no persistence (appendonly no, no save points): ledger records queued in it"
    " are lost if it restarts; set `appendonly yes`",
    "rdb": "persists only snapshots (appendonly no): ledger records queued since the last"
    " snapshot are lost if it restarts; set `appendonly yes`",
    "unknown": "does not allow CONFIG GET, so its persistence cannot be checked: make sure"
    " `appendonly yes` is set",
}


def _unapplied_migrations() -> int:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


_migrations: tuple[float, int | None] = (float("-inf"), None)
MIGRATIONS_RECHECK_S = 60.0


async def unapplied_migrations() -> int | None:
    """Migrations the code has and the database lacks (None: could not tell); rechecked at
    most once a minute per process, in the config lane's thread."""
    global _migrations
    checked, count = _migrations
    if time.monotonic() - checked < MIGRATIONS_RECHECK_S:
        return count
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            count = await runtime.run_db("config", _unapplied_migrations)
    except Exception:
        count = None
    _migrations = (time.monotonic(), count)
    return count


async def warn_at_start() -> None:
    """Log a WARNING for a Redis without persistence and for unapplied migrations."""
    persistence = await redis_persistence(runtime.aredis())
    if persistence in _PERSISTENCE_RISK:
        log.warning("the Redis at REDIS_URL %s", _PERSISTENCE_RISK[persistence])
    pending = await unapplied_migrations()
    if pending:
        log.warning(
            "the database lacks %d migration(s) of this code: run `python manage.py migrate`",
            pending,
        )


class ReadyzView(APIView):
    @extend_schema(
        summary="Readiness: Redis and the database answer",
        responses={200: schema_components.READINESS, 503: schema_components.READINESS},
        auth=[],
        tags=["operations"],
    )
    async def get(self, request):
        if drain.draining():
            return JsonResponse({"status": "draining", "checks": {}}, status=503)
        redis = runtime.aredis()
        redis_state, db_state, persistence, pending = await asyncio.gather(
            _check("redis", partial(writable, redis)),
            _check("database", partial(runtime.run_db, "config", _select_one)),
            redis_persistence(redis),
            unapplied_migrations(),
        )
        checks = {"redis": redis_state, "database": db_state}
        ready = all(state == "ok" for state in checks.values())
        return JsonResponse(
            {
                "status": "ok" if ready else "unavailable",
                "checks": checks,
                "redis_persistence": persistence,
                "unapplied_migrations": pending,
            },
            status=200 if ready else 503,
        )


def _scrape_allowed(authorization: str | None) -> None:
    """A bearer token equal to METRICS_TOKEN (compared in constant time); without one
    configured, only a DEBUG server exposes metrics."""
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEBUG:
            return
        raise PermissionDenied("Metrics are disabled: set METRICS_TOKEN to scrape them.")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationFailed("Send 'Authorization: Bearer <METRICS_TOKEN>'.", code=None)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise PermissionDenied("Wrong metrics token.")


class MetricsView(APIView):
    @extend_schema(exclude=True)
    async def get(self, request):
        try:
            _scrape_allowed(request.headers.get("authorization"))
        except (AuthenticationFailed, PermissionDenied) as error:
            headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
            return error_response(error, extra_headers=headers)
        body = metrics.exposition()
        try:
            snapshot = await store().snapshot()
            providers = sorted({m.provider.name for m in snapshot.models.values()})
            body += await metrics.circuit_exposition(redis=runtime.aredis(), providers=providers)
            body += await metrics.ledger_exposition(redis=runtime.aredis())
        except Exception as exc:  # counters are still worth serving when Redis or the DB is away
            log.warning("circuit state left out of /metrics: %s", type(exc).__name__)
        return HttpResponse(body, content_type=metrics.CONTENT_TYPE)
