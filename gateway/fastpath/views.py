"""adrf's async APIView, dispatched without its thread hop (fast path: README.md here).

`InlineAPIView.async_dispatch` re-implements adrf's (0.1.x) so DRF's `initial()` runs inline;
with GATEWAY_FAST_PATH=0 adrf's own dispatch runs instead.
"""

from __future__ import annotations

import asyncio

from adrf.views import APIView
from rest_framework.negotiation import DefaultContentNegotiation

from gateway import fastpath


class JSONOnly(DefaultContentNegotiation):
    """The API speaks JSON (and SSE, as plain Django responses) whatever the Accept header
    says, as OpenAI's does: no per-request parsing of Accept (1.4 % of the profile)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class InlineAPIView(APIView):
    """adrf's APIView without its thread hop: with no authentication, permission or throttle
    classes, DRF's `initial()` is a few microseconds of pure CPU, so it runs inline instead of
    through `sync_to_async` (the hot path then never leaves the event loop).

    Once the response is final the view lets go of DRF's request, and the request of its
    parser context: they point at each other (`view.request`, `request.parser_context`, which
    holds the view and the request itself), cycles only the cyclic GC could free. Left to
    it, every request's view, request and response waited for a collection, and collections
    came more often and took longer (tens of milliseconds, 200 ms for an older generation,
    with 100 requests in flight), stalling every request in the worker meanwhile.
    """

    content_negotiation_class = JSONOnly

    async def async_dispatch(self, request, *args, **kwargs):
        if not fastpath.enabled():
            return await super().async_dispatch(request, *args, **kwargs)
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None)
            if request.method.lower() not in self.http_method_names or handler is None:
                handler = self.http_method_not_allowed
            response = handler(request, *args, **kwargs)
            if asyncio.iscoroutine(response):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        response = self.finalize_response(request, response, *args, **kwargs)
        request.parser_context = None  # no cycle left for the GC (above)
        self.request = self.response = None
        return response
