"""Rate-limits failed logins on every login form: the admin's and the dashboards'
(settings.GUARDED_LOGIN_URLS), which share one count, so neither is a way around the other.

Failures are counted in the Django cache (Redis) per client IP and username, so every
instance shares the count: after MAX_FAILURES failures the pair is refused with 429 for the
rest of WINDOW_S, counted from the first failure. A successful login clears the count.
Keyed by IP *and* username so that one office behind a NAT or a load balancer does not lock
everyone out, while a password guesser gets MAX_FAILURES tries per username per window.

Async-capable: it sits in front of the API too, where it only compares the path.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

MAX_FAILURES = 5
WINDOW_S = 15 * 60
PREFIX = "login-fail:"

THROTTLED_PAGE = (
    "<!doctype html><title>Too many login attempts</title>"
    "<h1>Too many failed login attempts</h1>"
    "<p>Login for this account from your address is paused for up to 15 minutes.</p>"
)


def failure_key(request: HttpRequest) -> str:
    ip = request.META.get("REMOTE_ADDR", "")
    username = str(request.POST.get("username", "")).strip().lower()
    return PREFIX + hashlib.sha256(f"{ip}\0{username}".encode()).hexdigest()


def throttled() -> HttpResponse:
    response = HttpResponse(THROTTLED_PAGE, status=429)
    response["Retry-After"] = str(WINDOW_S)
    return response


class LoginRateLimitMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @cached_property
    def login_paths(self) -> frozenset[str]:
        """Every login form (settings.GUARDED_LOGIN_URLS): one count and one limit for all."""
        names = getattr(settings, "GUARDED_LOGIN_URLS", ["admin:login"])
        return frozenset(reverse(name) for name in names)

    def _guarded(self, request: HttpRequest) -> bool:
        return request.method == "POST" and request.path in self.login_paths

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        if not self._guarded(request):
            return self.get_response(request)
        key = failure_key(request)
        if (cache.get(key) or 0) >= MAX_FAILURES:
            return throttled()
        response = self.get_response(request)
        if response.status_code == 200:  # the form came back with an error: a failure
            cache.add(key, 0, WINDOW_S)
            cache.incr(key)
        elif response.status_code == 302:  # logged in
            cache.delete(key)
        return response

    async def _acall(self, request: HttpRequest):
        if not self._guarded(request):
            return await self.get_response(request)
        key = failure_key(request)
        if (await cache.aget(key) or 0) >= MAX_FAILURES:
            return throttled()
        response = await self.get_response(request)
        if response.status_code == 200:
            await cache.aadd(key, 0, WINDOW_S)
            await cache.aincr(key)
        elif response.status_code == 302:
            await cache.adelete(key)
        return response
