"""OpenAI's vendored spec (gateway/spec) as the conformance suite reads it: requests drawn
from its request schema by schemathesis (seeded), answers checked against its response
schemas, and a tally of both for the run's summary (see conftest.py)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from gateway.spec import COMMIT, spec

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
MODELS = "/v1/models"
MODEL = "/v1/models/{id}"
ERRORS = "error envelopes (any endpoint)"
REQUEST_REF = "#/components/schemas/CreateChatCompletionRequest"
# The endpoint an answer schema belongs to, for the summary's per-endpoint counts.
ENDPOINT_OF = {
    "CreateChatCompletionResponse": CHAT,
    "CreateChatCompletionStreamResponse": CHAT,
    "CreateEmbeddingResponse": EMBEDDINGS,
    "Response": RESPONSES,
    "ResponseStreamEvent": RESPONSES,
    "ListModelsResponse": MODELS,
    "Model": MODEL,
    "ErrorResponse": ERRORS,
}
KINDS = (
    "valid requests accepted",
    "valid requests refused as documented",
    "invalid requests refused",
    "answers validated",
)
# What each run counted: "<endpoint> <kind> ok" and "... total", printed after the run.
TALLY: Counter[str] = Counter()
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def summary() -> list[str]:
    lines = [f"OpenAI spec {COMMIT[:7]} (info.version {spec().version})"]
    for endpoint in (CHAT, EMBEDDINGS, RESPONSES, MODELS, MODEL, ERRORS):
        for kind in KINDS:
            total = TALLY[f"{endpoint} {kind} total"]
            if total:
                lines.append(f"{endpoint}: {kind}: {TALLY[f'{endpoint} {kind} ok']}/{total}")
    return lines


def count(endpoint: str, kind: str, *, ok: bool) -> None:
    """Count one request or answer of `endpoint` for the summary."""
    TALLY[f"{endpoint} {kind} total"] += 1
    TALLY[f"{endpoint} {kind} ok"] += ok


def conforms(schema: str, instance: Any) -> str | None:
    """None when `instance` follows the spec's component `schema`, else why not."""
    problem = spec().schema(schema).problem(instance)
    return None if problem is None else f"{problem.param}: {problem.message}"


def check_answer(schema: str, instance: Any) -> None:
    """Count one answer (or stream chunk) and assert it follows the spec."""
    problem = conforms(schema, instance)
    count(ENDPOINT_OF[schema], "answers validated", ok=problem is None)
    assert problem is None, f"{schema}: {problem}\n{orjson.dumps(instance).decode()[:2000]}"


def sse_events(text: str) -> list[Any]:
    """The JSON events of a server-sent event stream, up to `[DONE]` (which ends the list)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            if data == "[DONE]":
                return out
            out.append(orjson.loads(data))
    raise AssertionError(f"the stream did not end with [DONE]: {text[-500:]}")


def named_events(text: str) -> list[dict[str, Any]]:
    """The events of a Responses API stream (`event: <type>` then `data: {...}`), each
    checked to carry its own name as `type`."""
    out: list[dict[str, Any]] = []
    for block in text.strip().split("\n\n"):
        name, _, data = block.partition("\ndata: ")
        event = orjson.loads(data)
        assert name == f"event: {event['type']}", block[:300]
        out.append(event)
    return out


def generated(
    mode: GenerationMode, how_many: int, path: str = CHAT, ref: str = REQUEST_REF
) -> list[Any]:
    """`how_many` request bodies for POST `path` drawn from the spec's request schema `ref`,
    the same ones every run (derandomized): valid ones (POSITIVE) or ones that break it in
    one place (NEGATIVE; some are not even objects or not JSON)."""
    document = {
        "openapi": "3.1.0",
        "info": {"title": "OpenAI", "version": spec().version},
        "paths": {
            path: {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": ref}}},
                    },
                    "responses": {"200": {"description": "An answer."}},
                }
            }
        },
        **spec().document,
    }
    api = schemathesis.openapi.from_dict(document)
    api.config.generation.update(allow_x00=False, codec="utf-8")
    bodies: list[Any] = []

    @given(case=api[path]["POST"].as_strategy(generation_mode=mode))
    @settings(
        max_examples=how_many,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def draw(case) -> None:
        bodies.append(case.body)

    draw()
    return bodies


def _clean(value: Any) -> Any:
    return CONTROL.sub("", value) if isinstance(value, str) else value


def as_the_gateway_takes(body: dict[str, Any], *, model: str, max_output: int) -> dict[str, Any]:
    """A valid body with the gateway's documented additions to the spec applied (docs/
    openai-spec.md): a model it serves; max tokens from 1 to the model's max output (the
    spec sets no bound; the model's limit is a 400 of its own, proven elsewhere); and no
    control characters in the strings it stores or sends on as headers. The legacy
    `functions` / `function_call` are kept only where they translate to tools: not beside
    `tools` / `tool_choice`, and `function_call` only with `functions` (400s of their own,
    as OpenAI answers them)."""
    body = {**body, "model": model}
    if body.get("tools") is not None or body.get("tool_choice") is not None:
        body.pop("functions", None)
    if body.get("functions") is None:
        body.pop("function_call", None)
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None:
            body[name] = min(max(int(body[name]), 1), max_output)
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        if isinstance(body.get(name), str):
            body[name] = _clean(body[name])
    if isinstance(body.get("metadata"), dict):
        body["metadata"] = {_clean(k): v for k, v in body["metadata"].items()}
    return body
