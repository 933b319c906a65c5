"""The OpenAPI description of the public API, served by drf-spectacular at /api/schema/.

The API views parse JSON by hand (see gateway/validation.py) and /v1/budget is a plain
Django view, so nothing can be inferred from serializers: the schemas are written here as
JSON Schema, next to each other, and attached from outside. `document_plain_views` (a
drf-spectacular preprocessing hook) swaps each described route's view for an annotated
subclass or wrapper, for schema generation only; requests never go through them.
"""

from __future__ import annotations

from typing import Any

from adrf.views import APIView
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)

from gateway import views
from gateway.schema_components import COMPONENTS, ERROR, SSE_EVENT, ref

KEY_AUTH: Any = [{"GatewayKey": []}]  # drf-spectacular takes security requirement objects


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {s: OpenApiResponse(ERROR, description="An OpenAI-style error.") for s in statuses}


GATEWAY_HEADERS = [
    OpenApiParameter(
        "X-Gateway-Feature",
        str,
        OpenApiParameter.HEADER,
        description="The feature billed (required when the team has features).",
    ),
    OpenApiParameter(
        "X-Gateway-Priority", str, OpenApiParameter.HEADER, enum=["low", "medium", "high"]
    ),
    OpenApiParameter(
        "X-Gateway-Cache-TTL",
        int,
        OpenApiParameter.HEADER,
        description="Seconds to cache the answer; 0 bypasses the cache.",
    ),
]


HELLO = [{"role": "user", "content": "Say hello in five words."}]
CHAT_EXAMPLES = [
    OpenApiExample("answer", value={"model": "gpt-4o-mini", "messages": HELLO}, request_only=True),
    OpenApiExample(
        "streamed answer",
        value={"model": "gpt-4o-mini", "messages": HELLO, "stream": True},
        request_only=True,
    ),
]


class ChatCompletionsDoc(views.ChatCompletionsView):
    @extend_schema(
        summary="Create a chat completion (OpenAI-compatible)",
        description='JSON by default; with `"stream": true` the answer is `text/event-stream`: '
        "`data: {chat.completion.chunk}` events ending in `data: [DONE]`. A stream that fails "
        'after it started ends with a `data: {"error": ...}` event and no `[DONE]`.',
        request={"application/json": ref("ChatCompletionRequest")},
        responses={
            (200, "application/json"): OpenApiResponse(ref("ChatCompletion")),
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT, description="Server-sent chat.completion.chunk events."
            ),
            **errors(400, 401, 403, 404, 413, 415, 429, 431, 502, 503, 504),
        },
        parameters=GATEWAY_HEADERS,
        examples=CHAT_EXAMPLES,
        auth=KEY_AUTH,
        tags=["chat"],
    )
    async def post(self, request):
        return await super().post(request)


class ModelsDoc(views.ModelsView):
    @extend_schema(
        summary="The models a key may ask for",
        responses={200: OpenApiResponse(ref("ModelList")), **errors(400, 401, 431, 503)},
        auth=KEY_AUTH,
        tags=["models"],
    )
    async def get(self, request):
        return await super().get(request)


class ModelDoc(views.ModelView):
    @extend_schema(
        summary="One model the key may ask for (404 otherwise)",
        operation_id="v1_model_retrieve",
        responses={200: OpenApiResponse(ref("Model")), **errors(401, 404, 431, 503)},
        auth=KEY_AUTH,
        tags=["models"],
    )
    async def get(self, request, model_id: str):
        return await super().get(request, model_id)


class EmbeddingsDoc(views.EmbeddingsView):
    @extend_schema(
        summary="Create embeddings (OpenAI-compatible; docs/embeddings.md)",
        request={"application/json": ref("EmbeddingsRequest")},
        responses={
            200: OpenApiResponse(ref("EmbeddingsList")),
            **errors(400, 401, 403, 404, 413, 415, 429, 431, 502, 503, 504),
        },
        parameters=GATEWAY_HEADERS,
        auth=KEY_AUTH,
        tags=["embeddings"],
    )
    async def post(self, request):
        return await super().post(request)


class BudgetDoc(APIView):
    """gateway.budget_api.budget is a plain Django view; this wrapper only carries its schema."""

    @extend_schema(
        summary="What the key's team and feature may still spend, per window",
        responses={200: OpenApiResponse(ref("BudgetStatus")), **errors(400, 401, 431, 503)},
        auth=KEY_AUTH,
        tags=["budgets"],
    )
    async def get(self, request):
        from gateway.budget_api import budget

        return await budget(request._request)


DESCRIBED: dict[str, type[APIView]] = {
    "chat-completions": ChatCompletionsDoc,
    "embeddings": EmbeddingsDoc,
    "models": ModelsDoc,
    "budget": BudgetDoc,
}
# Routes with a path parameter, by their path as the schema spells it.
DESCRIBED_PATHS: dict[str, type[APIView]] = {"/v1/models/{model_id}": ModelDoc}


def document_plain_views(endpoints: list[tuple]) -> list[tuple]:
    """Preprocessing hook: the routes named in DESCRIBED, described by their annotated views."""
    paths = {reverse(name): cls for name, cls in DESCRIBED.items()}
    kept = [e for e in endpoints if e[0] not in paths and e[0] not in DESCRIBED_PATHS]
    for path, cls in paths.items():
        method = "POST" if hasattr(cls, "post") else "GET"
        kept.append((path, "^" + path.lstrip("/") + "$", method, cls.as_view()))
    for path, cls in DESCRIBED_PATHS.items():
        pattern = "^" + path.lstrip("/").replace("{model_id}", "(?P<model_id>.+)") + "$"
        kept.append((path, pattern, "GET", cls.as_view()))
    return kept


def add_components(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Postprocessing hook: the shared schemas and the gateway key's security scheme."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(COMPONENTS)
    components.setdefault("securitySchemes", {})["GatewayKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A gateway API key: `Authorization: Bearer gw-...`.",
    }
    return result
