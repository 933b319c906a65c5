"""The JSON Schemas of the public API's bodies (OpenAPI components), written by hand next to
each other: the API views parse JSON themselves, so nothing is inferred from serializers.
gateway/schema.py attaches them to the routes."""

from __future__ import annotations


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
