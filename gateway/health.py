"""The operator's endpoints: liveness (/healthz), readiness (/readyz) and /metrics.

/healthz does no I/O: it answers as long as the event loop does, so a load balancer or an
orchestrator restarts only a process that is really stuck. /readyz checks the two stores a
request needs (Redis and the database) with a short timeout each, so an instance that cannot
reach them is taken out of rotation rather than restarted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from functools import partial

from adrf.views import APIView
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema

from gateway import metrics, runtime, schema
from gateway.config import store
from gateway.errors import AuthenticationFailed, PermissionDenied, error_response

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0


class HealthzView(APIView):
    @extend_schema(
        summary="Liveness: the process is up (no I/O)",
        responses={200: schema.HEALTH},
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


class ReadyzView(APIView):
    @extend_schema(
        summary="Readiness: Redis and the database answer",
        responses={200: schema.READINESS, 503: schema.READINESS},
        auth=[],
        tags=["operations"],
    )
    async def get(self, request):
        redis_state, db_state = await asyncio.gather(
            _check("redis", runtime.aredis().ping),
            _check("database", partial(runtime.run_db, "config", _select_one)),
        )
        checks = {"redis": redis_state, "database": db_state}
        ready = all(state == "ok" for state in checks.values())
        return JsonResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
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
