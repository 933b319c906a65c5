"""The API paths' own ASGI handler: Django's, minus what costs a thread per request.

Django's ASGI handler runs each request in a fresh thread-sensitive context, so the first
switch to sync code (every `MiddlewareMixin` middleware, sync signal receivers) starts a new
thread. The API views are async and need none of the site middleware (sessions, CSRF,
messages, auth: a Bearer key is checked by the pipeline itself), so /v1, /healthz, /readyz
and /metrics are served without middleware and outside that context. The admin and the
dashboards keep Django's full stack.

What the site's middleware would have done that an API needs is done here: `/v1` checks the
Host header against ALLOWED_HOSTS (a 400 in OpenAI's envelope otherwise), every response on
these paths gets the headers of Django's SecurityMiddleware and XFrameOptionsMiddleware
(`X-Content-Type-Options: nosniff`, Referrer-Policy, Cross-Origin-Opener-Policy,
`X-Frame-Options: DENY`, and HSTS on HTTPS when SECURE_HSTS_SECONDS is set), and `Router`
refuses requests with too many or too large headers on every path (431).
`/healthz`, `/readyz` and `/metrics` are exempt from the Host check: probes and scrapers
address a process by its IP, as they are from SECURE_SSL_REDIRECT.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import DisallowedHost, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.core.handlers.exception import convert_exception_to_response
from django.db import close_old_connections, reset_queries
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix

from gateway.errors import GatewayError, HeadersTooLarge, InvalidRequest, error_response

API_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics")
HOST_CHECKED = "/v1/"
security_log = logging.getLogger("django.security.DisallowedHost")


# Django's own receivers of the request signals, and why the API paths do without them:
# the database work of these paths runs in gateway.runtime's lanes, which call
# close_old_connections around each piece of work in the thread that holds the connection
# (`runtime._with_usable_connection`); these paths log no queries, use no Django cache and
# set no per-request URLconf. Any other receiver (Sentry's, a project's) is called.
DJANGO_OWN_RECEIVERS = frozenset(
    {reset_queries, close_old_connections, close_caches, reset_urlconf}
)


async def send_request_signal(signal, sender, **named) -> None:
    """`signal.asend(sender, **named)` to the receivers other than Django's own, as Django
    calls them: sync ones together in a thread (thread-sensitive), async ones concurrently.

    With only Django's receivers connected (the default) this costs a lookup of the live
    receivers (a few microseconds) and no thread hop. Errors propagate, as in Django.
    """
    # `Signal._live_receivers` is Django's internal (5.2, as `asend` uses it): no public call
    # lists a signal's receivers, and asend would hop to a thread for Django's own.
    sync_receivers, async_receivers = signal._live_receivers(sender)
    sync_receivers = [r for r in sync_receivers if r not in DJANGO_OWN_RECEIVERS]
    async_receivers = [r for r in async_receivers if r not in DJANGO_OWN_RECEIVERS]
    if sync_receivers:

        def call_sync():
            for receiver in sync_receivers:
                receiver(signal=signal, sender=sender, **named)

        await sync_to_async(call_sync)()
    if async_receivers:
        await asyncio.gather(
            *(receiver(signal=signal, sender=sender, **named) for receiver in async_receivers)
        )


def _no_view(request):  # the middlewares below are used for their process_response only
    return None


_SECURITY = SecurityMiddleware(_no_view)
_XFRAME = XFrameOptionsMiddleware(_no_view)


def add_security_headers(request, response):
    """The response headers Django's SecurityMiddleware and XFrameOptionsMiddleware add on
    the site's pages, by their own code and settings (both are pure functions of the request
    and the response: no I/O, no thread)."""
    response = _SECURITY.process_response(request, response)
    return _XFRAME.process_response(request, response)


def oversized_headers(headers: list[tuple[bytes, bytes]]) -> HeadersTooLarge | None:
    """The 431 for a request past GATEWAY_MAX_HEADERS or GATEWAY_MAX_HEADER_BYTES, if it is."""
    limits = settings.GATEWAY
    most, most_bytes = limits["MAX_HEADERS"], limits["MAX_HEADER_BYTES"]
    if len(headers) > most:
        return HeadersTooLarge(
            f"The request has {len(headers)} headers; the limit is {most} (GATEWAY_MAX_HEADERS)."
        )
    size = sum(len(name) + len(value) for name, value in headers)
    if size > most_bytes:
        return HeadersTooLarge(
            f"The request headers are {size} bytes; the limit is {most_bytes} bytes "
            "(GATEWAY_MAX_HEADER_BYTES)."
        )
    return None


async def send_refusal(scope, send, error: GatewayError) -> None:
    """An error answered before Django sees the request: OpenAI's envelope on the API
    paths, plain text on the site's, with the security headers either way."""
    if scope["path"].startswith(API_PREFIXES):
        body, content_type = orjson.dumps(error.body()), b"application/json"
    else:
        body, content_type = error.message.encode(), b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = self._get_response_async if is_async else self._get_response  # type: ignore[attr-defined]
        self._middleware_chain = convert_exception_to_response(handler)

    def __init__(self) -> None:
        # The few API paths, resolved once each: Django walks the URLconf on every request
        # otherwise (4 % of a request's CPU in the profile). Only matches are kept, so the
        # size is bounded by the number of API routes, whatever paths clients send. The API
        # paths take no arguments and no middleware sets `request.urlconf`.
        self._resolved: dict[str, object] = {}
        super().__init__()

    async def read_body(self, receive):
        """The body in memory, not in Django's spooled temporary file: an API body is a few
        kilobytes. Past the API's limit (GATEWAY MAX_BODY_BYTES) the rest is read and
        dropped, and the view refuses the request as too large."""
        keep = int(settings.GATEWAY["MAX_BODY_BYTES"]) + 1
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            chunk = message.get("body", b"")
            if chunk and size < keep:
                chunks.append(chunk)
                size += len(chunk)
            if not message.get("more_body", False):
                break
        return io.BytesIO(b"".join(chunks)[:keep])

    def resolve_request(self, request):
        match = self._resolved.get(request.path_info)
        if match is None:
            match = super().resolve_request(request)
            if len(self._resolved) < 64:
                self._resolved[request.path_info] = match
        request.resolver_match = match
        return match

    async def __call__(self, scope, receive, send) -> None:
        # No ThreadSensitiveContext: nothing on these paths runs in a per-request thread.
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        """Django's `ASGIHandler.handle` without its thread hops.

        Django sends `request_started` with `asend`, which runs each sync receiver in a
        thread, and closes the response in a thread (closing sends `request_finished`).
        Here both signals are sent to every receiver except Django's own
        (`DJANGO_OWN_RECEIVERS`, whose work these paths do otherwise or never need), by
        `send_request_signal`: with no other receiver connected there is no thread hop.
        Sending all of them as Django does cost ~36 us per request, ~2 % of the gateway's
        CPU; see bench/README.md "Request signals on /v1" for this version's figures.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await send_request_signal(signals.request_started, self.__class__, scope=scope)
        request, refused = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            assert refused is not None  # create_request returns a request or a refusal
            await self.send_response(refused, send)
            await self.finish_response(refused)
            return

        if request.path.startswith(HOST_CHECKED):
            try:
                request.get_host()
            except DisallowedHost as exc:
                security_log.warning("%s", exc)
                host = request.META.get("HTTP_HOST", "")[:100]
                error = InvalidRequest(
                    f"The Host header {host!r} is not a name this gateway serves (ALLOWED_HOSTS).",
                    code="invalid_host",
                )
                response = add_security_headers(request, error_response(error))
                body_file.close()
                await self.send_response(response, send)
                await self.finish_response(response)
                return

        async def process_request():
            response = add_security_headers(request, await self.run_get_response(request))
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected while the response was being sent
            return response

        # As Django does: a client that disconnects cancels the view (which then releases
        # its budget hold), and the disconnect listener goes first.
        listener = asyncio.create_task(self.wait_for_disconnect(receive))
        responder = asyncio.create_task(process_request())
        await asyncio.wait((listener, responder), return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, responder):
            if not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        body_file.close()
        if not listener.cancelled() and (failure := listener.exception()) is not None:
            raise failure  # an invalid ASGI message, as Django raises it
        if responder.cancelled():
            await send_request_signal(signals.request_finished, self.__class__)
        else:
            await self.finish_response(responder.result())

    async def finish_response(self, response) -> None:
        """`response.close()` without its thread hop: the resource closers, then
        `request_finished` to the receivers other than Django's own."""
        _close(response)
        await send_request_signal(signals.request_finished, self.__class__)

    async def wait_for_disconnect(self, receive) -> None:
        """Django's `listen_for_disconnect`, returning where Django's raises `RequestAborted`.

        Once the response is sent the server reports the disconnect at once, so in Django's
        version every request ended with that exception raised again in `handle`: its
        traceback held `handle`'s frame, which held the task, which held the exception.
        Each request left that cycle, and the view's objects hanging from it, to the cyclic
        GC, whose pauses grew with the requests in flight (see `InlineAPIView`).
        """
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")


def _close(response) -> None:
    """`HttpResponseBase.close()` without its `request_finished` signal
    (`ApiHandler.finish_response` sends it)."""
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:
            pass
    response.closed = True


class Router:
    """Send the API paths to `api` and everything else to the full Django site."""

    def __init__(self, *, api, site) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            refusal = oversized_headers(scope["headers"])
            if refusal is not None:
                await send_refusal(scope, send, refusal)
                return
            if scope["path"].startswith(API_PREFIXES):
                await self.api(scope, receive, send)
                return
        await self.site(scope, receive, send)
