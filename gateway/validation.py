"""Validation of a chat completion request: every error names the field it is about.

The rules are OpenAI's published schema (gateway/spec), compiled once; a plain function
rather than a DRF Serializer, as this runs on every request (bench/spec_validation.py).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.spec import spec

MAX_NESTING = 64
# Gateway-only fields a client may send; never forwarded upstream nor part of the cache key.
STREAM_FIELDS = ("stream", "stream_options")
# Integer fields the pipeline computes with: `100.0` is the integer 100 (JSON Schema's view).
INTEGERS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
# Strings stored in the ledger or sent on as headers (see CONTROL).
IDENTIFIERS = ("model", "user", "safety_identifier", "prompt_cache_key")
# What PostgreSQL text and JSON cannot hold (NUL), and what makes no sense in a name or an
# identifier (every other C0 control character and DEL): refused where it would be stored
# or sent on as a header (`model`, `user`, metadata, the X-Gateway-* headers).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    # Nesting needs an opening bracket per level: a body with few brackets in all (nearly
    # every request) cannot nest too deep, and is not walked.
    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING and _depth(data) > MAX_NESTING:
        raise InvalidRequest(f"The request body nests deeper than {MAX_NESTING} levels.")
    return data


def _depth(value: Any, level: int = 0) -> int:
    # Iterative enough for our limit: stops descending as soon as the limit is passed.
    if level > MAX_NESTING:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def validate_model_name(data: dict[str, Any]) -> None:
    """`model`: a name without control characters, or "auto" (also when absent or null)."""
    model = data.get("model", "auto")
    if model is None:
        model = "auto"
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string (or 'auto').", param="model")
    _identifier(model, "model")
    data["model"] = model


def validate_chat(data: Any) -> dict[str, Any]:
    """Check an OpenAI chat request against OpenAI's own schema and return it.

    Valid per `CreateChatCompletionRequest` (gateway/spec) is accepted, with two additions
    of the gateway's: `model` may be left out (it means "auto", the routing rules), and the
    strings it stores or sends on as headers (`model`, `user`, metadata...) may hold no
    control characters. A null in a field the spec makes nullable is dropped first ("not
    sent": providers that do not take null, and the cache key, see it absent), and an integer
    written as a float (`100.0`, an integer in JSON Schema) becomes an int. Unknown fields
    pass through. The model's own limits (max output tokens) are checked once routed.
    """
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if data.get("model") is None:
        data["model"] = "auto"
    openai = spec()
    for name in [k for k, v in data.items() if v is None and k in openai.nullable]:
        del data[name]
    problem = openai.request.problem(data)
    if problem is not None:
        raise InvalidRequest(problem.message, param=problem.param)
    for name in INTEGERS:
        if isinstance(data.get(name), float):
            data[name] = int(data[name])
    for name in ("max_tokens", "max_completion_tokens"):
        # Unbounded in the spec, but OpenAI refuses it and the budget reservation counts it.
        if data.get(name) is not None and data[name] < 1:
            raise InvalidRequest(f"'{name}' must be at least 1.", param=name)
    if not data["model"].strip():
        raise InvalidRequest("'model' must be a non-empty string (or 'auto').", param="model")
    for name in IDENTIFIERS:
        if isinstance(data.get(name), str):
            _identifier(data[name], name)
    _validate_metadata(data.get("metadata"))
    return data


def _identifier(value: str, param: str) -> None:
    if CONTROL.search(value):
        raise InvalidRequest(
            f"'{param}' must not contain NUL or other control characters.", param=param
        )


def _validate_metadata(metadata: dict[str, str] | None) -> None:
    """Keys without control characters, values without NUL (the spec made them strings)."""
    for key, value in (metadata or {}).items():
        _identifier(key, "metadata")
        if "\x00" in value:
            raise InvalidRequest(
                f"'metadata.{key}' must not contain NUL characters.", param=f"metadata.{key}"
            )


def upstream_body(data: dict[str, Any]) -> dict[str, Any]:
    """The body sent to providers: the client's request without the streaming switches."""
    return {k: v for k, v in data.items() if k not in STREAM_FIELDS}
