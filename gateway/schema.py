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

KEY_AUTH: Any = [{"GatewayKey": []}]  # drf-spectacular takes security requirement objects


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


NULLABLE_STRING = {"type": "string", "nullable": True}
ERROR = ref("ErrorEnvelope")
HEALTH = {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}
READINESS = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable", "draining"]},
        "checks": {
            "type": "object",
            "properties": {
                name: {"type": "string", "enum": ["ok", "unavailable"]}
                for name in ("redis", "database")
            },
        },
        "redis_persistence": {
            "type": "string",
            "enum": ["aof", "rdb", "none", "unknown", "unavailable", "embedded"],
        },
        "unapplied_migrations": {"type": "integer", "nullable": True},
    },
}

MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {
            "type": "string",
            "enum": ["system", "developer", "user", "assistant", "tool", "function"],
        },
        "content": {
            "nullable": True,
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object", "required": ["type"]}},
            ],
        },
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
}

CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "description": "OpenAI's chat completion request, validated against OpenAI's own "
    "CreateChatCompletionRequest (openai-openapi f85dbe2, docs/openai-spec.md); the fields "
    "the gateway reads are listed here; unknown fields are passed to the provider.",
    "properties": {
        "model": {
            "type": "string",
            "description": "A model name, or 'auto' for the routes (no control characters).",
        },
        "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "max_tokens": {
            "type": "integer",
            "minimum": 1,
            "description": "At most the largest max output of the models that may serve it.",
        },
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 128, "nullable": True},
        "seed": {"type": "integer"},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "maxItems": 4, "items": {"type": "string"}},
            ]
        },
        "stream": {
            "type": "boolean",
            "nullable": True,
            "description": "true: the answer comes as server-sent events (text/event-stream); "
            "null is false.",
        },
        "stream_options": {"type": "object", "nullable": True},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {
            "oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object", "required": ["type"]},
            ]
        },
        "response_format": {"type": "object", "required": ["type"]},
        "logit_bias": {
            "type": "object",
            "nullable": True,
            "additionalProperties": {"type": "integer", "minimum": -100, "maximum": 100},
        },
        "logprobs": {"type": "boolean", "nullable": True},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "nullable": True},
        "user": {"type": "string", "description": "No control characters."},
        "metadata": {
            "type": "object",
            "nullable": True,
            "additionalProperties": {"type": "string"},
            "description": "Strings; keys without control characters, values without NUL.",
        },
    },
}

USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["object", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {"type": "object"},
                    "finish_reason": NULLABLE_STRING,
                },
            },
        },
        "usage": USAGE,
    },
}

# One server-sent event (OpenAPI before 3.2 describes a stream's items with `schema`).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "A JSON chat.completion.chunk; a JSON error envelope if the stream "
            "failed after it started; `[DONE]` last.",
        },
    },
}

ERROR_ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "description": "OpenAI's error envelope, for every error the gateway answers.",
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": NULLABLE_STRING,
                "code": NULLABLE_STRING,
            },
        }
    },
}

MODEL = {
    "type": "object",
    "required": ["id", "object", "owned_by", "mode"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["model"]},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "mode": {"type": "string", "enum": ["chat", "embedding"]},
        "context_window": {"type": "integer"},
        "dimensions": {"type": "integer", "description": "Embedding models, when known."},
    },
}

MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": ref("Model")},
    },
}

TOKENS = {"type": "array", "items": {"type": "integer"}}
EMBEDDINGS_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string"},
        "input": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                TOKENS,
                {"type": "array", "items": TOKENS},
            ]
        },
        "dimensions": {"type": "integer", "minimum": 1},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "user": {"type": "string"},
    },
}
EMBEDDINGS_LIST = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "object": {"type": "string", "enum": ["embedding"]},
                    "index": {"type": "integer"},
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string"},
                        ]
                    },
                },
            },
        },
        "model": {"type": "string"},
        "usage": {"type": "object"},
    },
}

BUDGET_WINDOW = {
    "type": "object",
    "properties": {
        "window": {"type": "string"},
        "window_key": {"type": "string"},
        "spent_usd": NULLABLE_STRING,
        "reserved_usd": NULLABLE_STRING,
        "limit_usd": NULLABLE_STRING,
        "remaining_usd": NULLABLE_STRING,
        "resets_at": {"type": "string", "format": "date-time"},
    },
}

BUDGET_STATUS = {
    "type": "object",
    "required": ["object", "team", "budgets"],
    "properties": {
        "object": {"type": "string", "enum": ["budget_status"]},
        "team": {"type": "string"},
        "feature": NULLABLE_STRING,
        "budgets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "scope": {"type": "string", "enum": ["team", "feature"]},
                    "feature": NULLABLE_STRING,
                    "hard": {"type": "boolean"},
                    "reservation": {"type": "string", "enum": ["cap", "strict"]},
                    "alert_thresholds": {"type": "array", "items": {"type": "integer"}},
                    "windows": {"type": "array", "items": BUDGET_WINDOW},
                },
            },
        },
    },
}

COMPONENTS = {
    "ChatMessage": MESSAGE,
    "ChatCompletionRequest": CHAT_REQUEST,
    "ChatCompletion": CHAT_COMPLETION,
    "ErrorEnvelope": ERROR_ENVELOPE,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
    "EmbeddingsRequest": EMBEDDINGS_REQUEST,
    "EmbeddingsList": EMBEDDINGS_LIST,
    "BudgetStatus": BUDGET_STATUS,
}


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
