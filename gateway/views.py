"""The OpenAI-compatible API. Views only read the HTTP request, call the pipeline in
gateway.services and shape the HTTP response."""

from __future__ import annotations

import functools

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, StreamingHttpResponse
from django.http.request import HttpHeaders
from django.views.decorators.csrf import csrf_exempt

from gateway import services
from gateway.auth import authenticate
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    UnsupportedMediaType,
    error_response,
)
from gateway.fastpath.views import InlineAPIView
from gateway.operations.base import Answer, Operation
from gateway.operations.chat import CHAT
from gateway.operations.embeddings import EMBEDDINGS
from gateway.validation import CONTROL


def json_response(body: dict, headers: dict[str, str], status: int = 200) -> HttpResponse:
    payload = orjson.dumps(body)
    response = HttpResponse(payload, content_type="application/json", status=status)
    response["Content-Length"] = str(len(payload))  # sent whole, not chunked
    for name, value in headers.items():
        response[name] = value
    return response


def sse_response(events, headers: dict[str, str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # ask reverse proxies not to buffer the stream
    for name, value in headers.items():
        response[name] = value
    return response


# The gateway's headers as the docs spell them, for the `param` of an error about one.
HEADER_NAMES = {
    name.lower(): name
    for name in ("X-Gateway-Feature", "X-Gateway-Priority", "X-Gateway-Cache-TTL")
}


class RequestHeaders:
    """The few request headers the API reads, looked up in `request.META` when asked for.
    Django's `request.headers` first builds a case-insensitive copy of every header
    (~16 us a request); the values are the same (META is where it reads them from).

    The gateway's own headers (X-Gateway-*) name things that are stored or matched against
    stored names: a value with a NUL or another control character is refused with a 400
    that names the header."""

    __slots__ = ("meta",)

    def __init__(self, request) -> None:
        self.meta = request.META

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.meta.get(HttpHeaders.to_wsgi_name(name), default)
        if value and name.lower().startswith("x-gateway-") and CONTROL.search(value):
            param = HEADER_NAMES.get(name.lower()) or name
            raise InvalidRequest(
                f"The {param} header must not contain NUL or other control characters.",
                param=param,
            )
        return value


def body_too_large(size: int | None, limit: int) -> BodyTooLarge:
    """The one 413 for a body over GATEWAY_MAX_BODY_BYTES, whichever check saw it."""
    told = f"is {size} bytes" if size is not None else f"is larger than {limit} bytes"
    return BodyTooLarge(
        f"The request body {told}; the limit is {limit} bytes (GATEWAY_MAX_BODY_BYTES)."
    )


def read_body(request) -> bytes:
    """The body, up to GATEWAY_MAX_BODY_BYTES. Django's own DATA_UPLOAD_MAX_MEMORY_SIZE is
    derived from the same setting (settings.py), so whichever check sees a body too large,
    the limit and the message are the same."""
    limit = int(settings.GATEWAY["MAX_BODY_BYTES"])
    content_type = request.content_type or ""
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"Send the request as application/json, not {content_type}.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise body_too_large(declared, limit)
    try:
        raw = request.body
    except RequestDataTooBig:  # only if DATA_UPLOAD_MAX_MEMORY_SIZE was set apart from it
        raise body_too_large(None, min(limit, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)) from None
    if len(raw) > limit:  # sent without a Content-Length; the API handler kept limit + 1 bytes
        raise body_too_large(None, limit)
    return raw


def to_response(answer: Answer) -> HttpResponse | StreamingHttpResponse:
    """An `Answer` of the pipeline as Django's response: SSE or JSON."""
    if answer.events is not None:
        return sse_response(answer.events, answer.headers)
    return json_response(answer.body or {}, answer.headers, answer.status)


async def serve(operation: Operation, request) -> HttpResponse | StreamingHttpResponse:
    """Run `operation` on a DRF request through the one pipeline (services.run)."""
    answer = await services.run(
        operation,
        headers=RequestHeaders(request),
        raw_body=functools.partial(read_body, request._request),
    )
    return to_response(answer)


class ChatCompletionsView(InlineAPIView):
    """POST /v1/chat/completions: OpenAI's chat completions, JSON or SSE."""

    async def post(self, request):
        return await serve(CHAT, request)


class EmbeddingsView(InlineAPIView):
    """POST /v1/embeddings: OpenAI's embeddings, floats or base64."""

    async def post(self, request):
        return await serve(EMBEDDINGS, request)


def model_entry(m) -> dict:
    """A model as /v1/models lists it: OpenAI's fields, with the gateway's `mode`
    (chat | embedding), context window and, for embeddings, the dimensions."""
    entry = {
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": m.provider.name,
        "mode": m.mode,
        "context_window": m.context_window,
    }
    if m.dimensions:
        entry["dimensions"] = m.dimensions
    return entry


class ModelsView(InlineAPIView):
    """GET /v1/models: the models a key may ask for."""

    async def get(self, request):
        try:
            _key, _team, snapshot = await authenticate(
                request.META.get("HTTP_AUTHORIZATION"), request.META
            )
        except GatewayError as error:
            return error_response(error)
        data = [model_entry(m) for m in snapshot.models.values()]
        return json_response({"object": "list", "data": data}, {})


class ModelView(InlineAPIView):
    """GET /v1/models/{id}: one model, or a 404 in OpenAI's envelope for a model the key
    cannot ask for (unknown or disabled: the same answer, so nothing leaks)."""

    async def get(self, request, model_id: str):
        try:
            _key, _team, snapshot = await authenticate(
                request.META.get("HTTP_AUTHORIZATION"), request.META
            )
            model = snapshot.models.get(model_id)
            if model is None:
                raise ModelNotFound(
                    f"The model '{model_id}' does not exist or you do not have access to it.",
                    param="model",
                )
        except GatewayError as error:
            return error_response(error)
        return json_response(model_entry(model), {})


class NotServed(GatewayError):
    status = 404
    code = "unknown_url"


# The API answers bearer-key clients, never a browser session: no CSRF check, on either
# server (the fast path has no CSRF middleware; Django's stock handler does).
@csrf_exempt
def unknown_path(request, *args, **kwargs):
    """Any other path under /v1/: a JSON 404 in OpenAI's envelope, never Django's page."""
    return error_response(
        NotServed(
            f"Unknown request URL: {request.method} {request.path}. See /v1/models and docs/."
        )
    )


@csrf_exempt
def legacy_completions(request):
    """POST /v1/completions (the legacy text completions API) is not served."""
    return error_response(
        NotServed(
            "Legacy completions (/v1/completions) are not served by this gateway; "
            "use /v1/chat/completions.",
            code="legacy_completions_not_served",
        )
    )
