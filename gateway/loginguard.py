"""Rate-limits logins to the admin and the other login forms (`settings.GUARDED_LOGIN_URLS`).

Attempts are counted per client IP and username, so every instance shares the count: at most
MAX_FAILURES attempts of a pair are evaluated per WINDOW_S, counted from the first one; a
successful login (the form answers 302) clears the count. Keyed by IP *and* username so that
one office behind a NAT or a load balancer does not lock everyone out, while a password
guesser gets MAX_FAILURES tries per username per window.

The count is taken *before* the password is looked at, atomically: one INCR (a Lua script
that also starts the window) answers the attempt's number, and only attempts numbered
1..MAX_FAILURES reach the view. Twenty attempts sent in parallel therefore evaluate at most
MAX_FAILURES passwords; the rest get 429 without a password check.

While Redis is unreachable the guard fails open to the database, never to "no limit" and
never to a 500: the same count kept in `LoginAttempts` rows, incremented under a row lock,
with a WARNING in the log.

Async-capable: it sits in front of the API too, where it only compares the path.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import RedisError

MAX_FAILURES = 5
WINDOW_S = 15 * 60
PREFIX = "login-fail:"
DEFAULT_URLS = ("admin:login", "reports:login")

log = logging.getLogger("gateway.loginguard")

THROTTLED_PAGE = (
    "<!doctype html><title>Too many login attempts</title>"
    "<h1>Too many failed login attempts</h1>"
    "<p>Login for this account from your address is paused for up to 15 minutes.</p>"
)

# INCR, and start the window on the first attempt (also heals a key left without a TTL).
_COUNT_ATTEMPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""


def failure_key(request: HttpRequest) -> str:
    ip = request.META.get("REMOTE_ADDR", "")
    username = str(request.POST.get("username", "")).strip().lower()
    return PREFIX + hashlib.sha256(f"{ip}\0{username}".encode()).hexdigest()


def throttled() -> HttpResponse:
    response = HttpResponse(THROTTLED_PAGE, status=429)
    response["Retry-After"] = str(WINDOW_S)
    return response


@functools.cache
def guarded_paths() -> frozenset[str]:
    """The paths of every login form (URL names or paths): one count and one limit for all."""
    entries = getattr(settings, "GUARDED_LOGIN_URLS", DEFAULT_URLS)
    return frozenset(entry if entry.startswith("/") else reverse(entry) for entry in entries)


# --- the two stores -------------------------------------------------------------------------

_redis_errors: tuple[type[BaseException], ...] = (RedisError, ConnectionError, TimeoutError)
try:  # django-redis wraps connection failures in its own exception
    from django_redis.exceptions import ConnectionInterrupted

    _redis_errors += (ConnectionInterrupted,)
except ImportError:  # pragma: no cover
    pass


def _redis():
    return get_redis_connection("default")  # django-redis: the raw redis-py client


def _count_in_redis(key: str) -> int:
    return int(_redis().eval(_COUNT_ATTEMPT, 1, cache.make_key(key), WINDOW_S * 1000))


def _count_in_database(key: str) -> int:
    from gateway.models import LoginAttempts

    now = timezone.now()
    with transaction.atomic():
        row, created = LoginAttempts.objects.select_for_update().get_or_create(
            key=key, defaults={"count": 1, "expires_at": now + dt.timedelta(seconds=WINDOW_S)}
        )
        if created:
            return 1
        if row.expires_at <= now:  # the window is over: this attempt starts a new one
            LoginAttempts.objects.filter(pk=row.pk).update(
                count=1, expires_at=now + dt.timedelta(seconds=WINDOW_S)
            )
            return 1
        LoginAttempts.objects.filter(pk=row.pk).update(count=F("count") + 1)
        return row.count + 1  # the row is locked until commit: nobody else counted meanwhile


def count_attempt(key: str) -> tuple[int, str]:
    """This attempt's number in its window, counted before anything else; and the store
    that counted it ("redis" or "database")."""
    try:
        return _count_in_redis(key), "redis"
    except _redis_errors as exc:
        log.warning(
            "login guard: Redis unavailable (%s: %s); counting login attempts in the database",
            type(exc).__name__,
            exc,
        )
    return _count_in_database(key), "database"


def clear(key: str, store: str) -> None:
    if store == "redis":
        try:
            cache.delete(key)
            return
        except _redis_errors as exc:
            log.warning("login guard: Redis unavailable (%s) clearing a count", exc)
    from gateway.models import LoginAttempts

    try:
        LoginAttempts.objects.filter(key=key).delete()
    except DatabaseError:
        log.exception("login guard: could not clear a login attempt count")


def admit(request: HttpRequest) -> tuple[str, str] | None:
    """Count this attempt; (key, store) if it may be evaluated, None if it is over the limit."""
    key = failure_key(request)
    number, store = count_attempt(key)
    if number > MAX_FAILURES:
        return None
    return key, store


def settle(response: HttpResponse, key: str, store: str) -> None:
    if response.status_code == 302:  # logged in
        clear(key, store)


class LoginRateLimitMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _guarded(self, request: HttpRequest) -> bool:
        return request.method == "POST" and request.path in guarded_paths()

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        if not self._guarded(request):
            return self.get_response(request)
        admitted = admit(request)
        if admitted is None:
            return throttled()
        response = self.get_response(request)
        settle(response, *admitted)
        return response

    async def _acall(self, request: HttpRequest):
        if not self._guarded(request):
            return await self.get_response(request)
        admitted = await sync_to_async(admit)(request)
        if admitted is None:
            return throttled()
        response = await self.get_response(request)
        await sync_to_async(settle)(response, *admitted)
        return response
