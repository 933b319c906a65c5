"""The OpenAPI description of /v1/messages, /v1/messages/count_tokens and /v1/responses
(attached to their views with drf-spectacular's `extend_schema`; see gateway/schema.py for
the chat endpoint's). Request schemas name the fields the translation reads; anything else
is refused with a 400 (docs/compatibility.md)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from gateway.schema import GATEWAY_HEADERS, KEY_AUTH, errors

STATUSES = (400, 401, 403, 404, 413, 415, 429, 431, 502, 503, 504)
OBJECT: dict[str, Any] = {"type": "object"}
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}
TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
}
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": TEXT_BLOCK}]},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": OBJECT}]},
                },
            },
        },
        "tools": {"type": "array", "items": OBJECT},
        "tool_choice": OBJECT,
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "metadata": OBJECT,
        "stream": {"type": "boolean"},
        "thinking": OBJECT,
        "output_config": OBJECT,
    },
}
MESSAGE = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["message"]},
        "role": {"type": "string", "enum": ["assistant"]},
        "model": {"type": "string"},
        "content": {"type": "array", "items": OBJECT},
        "stop_reason": {"type": "string", "nullable": True},
        "usage": OBJECT,
    },
}
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": OBJECT}]},
        "instructions": {"type": "string"},
        "tools": {"type": "array", "items": OBJECT},
        "tool_choice": {"oneOf": [{"type": "string"}, OBJECT]},
        "text": OBJECT,
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stream": {"type": "boolean"},
        "store": {"type": "boolean", "enum": [False]},
        "metadata": OBJECT,
    },
}
RESPONSE = {
    "type": "object",
    "required": ["id", "object", "status", "model", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["response"]},
        "status": {"type": "string"},
        "model": {"type": "string"},
        "output": {"type": "array", "items": OBJECT},
        "usage": {**OBJECT, "nullable": True},
    },
}
SSE = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
ANTHROPIC_VERSION = OpenApiParameter(
    "anthropic-version",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Required, as on Anthropic's API (e.g. 2023-06-01).",
)


def anthropic_errors() -> dict[int, OpenApiResponse]:
    return {
        s: OpenApiResponse(ANTHROPIC_ERROR, description="Anthropic's error shape.")
        for s in STATUSES
    }


messages_doc = extend_schema(
    summary="Create a message (Anthropic's Messages API)",
    description="Translated to a chat request and served by the same routes and providers. "
    'With `"stream": true` the answer is Anthropic\'s event stream. The key is sent as '
    "`x-api-key` or `Authorization: Bearer`. Anthropic-only fields are refused with a 400.",
    request={"application/json": MESSAGES_REQUEST},
    responses={
        (200, "application/json"): OpenApiResponse(MESSAGE),
        (200, "text/event-stream"): OpenApiResponse(SSE, description="Anthropic's events."),
        **anthropic_errors(),
    },
    parameters=[ANTHROPIC_VERSION, *GATEWAY_HEADERS],
    auth=KEY_AUTH,
    tags=["messages"],
)
count_tokens_doc = extend_schema(
    summary="Estimate a message request's input tokens (no provider is asked)",
    request={"application/json": {**MESSAGES_REQUEST, "required": ["model", "messages"]}},
    responses={
        200: OpenApiResponse(
            {
                "type": "object",
                "required": ["input_tokens"],
                "properties": {"input_tokens": {"type": "integer"}},
            }
        ),
        **anthropic_errors(),
    },
    parameters=[ANTHROPIC_VERSION],
    auth=KEY_AUTH,
    tags=["messages"],
)
responses_doc = extend_schema(
    summary="Create a response (OpenAI's Responses API; nothing is stored)",
    description="Translated to a chat request and served by the same routes and providers. "
    'With `"stream": true` the answer is the Responses API\'s event stream. '
    "`previous_response_id` and `store: true` are refused: responses are not kept.",
    request={"application/json": RESPONSES_REQUEST},
    responses={
        (200, "application/json"): OpenApiResponse(RESPONSE),
        (200, "text/event-stream"): OpenApiResponse(SSE, description="Responses API events."),
        **errors(*STATUSES),
    },
    parameters=GATEWAY_HEADERS,
    auth=KEY_AUTH,
    tags=["responses"],
)
