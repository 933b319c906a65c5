"""The API paths' own ASGI handler: Django's, minus what costs a thread per request.

Django's ASGI handler runs each request in a fresh thread-sensitive context, so the first
switch to sync code (every `MiddlewareMixin` middleware, sync signal receivers) starts a new
thread. The API views are async and need none of the site middleware (sessions, CSRF,
messages, auth: a Bearer key is checked by the pipeline itself), so /v1, /healthz, /readyz
and /metrics are served without middleware and outside that context. The admin and the
dashboards keep Django's full stack.
"""

from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

API_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics")


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(handler)

    async def __call__(self, scope, receive, send) -> None:
        # No ThreadSensitiveContext: the few sync hops left (signals, closing the response)
        # share asgiref's one long-lived thread instead of starting one per request.
        await self.handle(scope, receive, send)


class Router:
    """Send the API paths to `api` and everything else to the full Django site."""

    def __init__(self, *, api, site) -> None:
        self.api = api
        self.site = site

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
            await self.api(scope, receive, send)
        else:
            await self.site(scope, receive, send)
