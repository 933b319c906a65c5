"""Validation of a chat completion request: every error names the field it is about.

Hand-written rather than a DRF Serializer: this runs on every request, and a plain function
over the parsed JSON is an order of magnitude cheaper while keeping exact messages.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
MAX_TOKENS_LIMIT = 1_000_000
MAX_NESTING = 64
# Gateway-only fields a client may send; never forwarded upstream nor part of the cache key.
STREAM_FIELDS = ("stream", "stream_options")
# The request fields OpenAI's spec declares nullable: null means "not given", as OpenAI takes
# it, and such a field is dropped from the request (providers that do not take null, and the
# cache key, see it absent).
NULLABLE = frozenset(
    {
        "temperature", "top_p", "n", "stream", "stop", "max_tokens", "max_completion_tokens",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
        "seed", "stream_options", "metadata", "store", "prediction", "audio",
        "prompt_cache_key", "safety_identifier", "moderation", "service_tier",
    }
)  # fmt: skip
TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
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
    """Check an OpenAI chat request and return it (unknown fields are passed through)."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in [k for k, v in data.items() if v is None and k in NULLABLE]:
        del data[name]
    validate_model_name(data)
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        value = data.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidRequest(f"'{name}' must be a string.", param=name)
            _identifier(value, name)
    _validate_metadata(data.get("metadata"))
    _validate_messages(data.get("messages"))
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    _number(data, "presence_penalty", -2, 2)
    _number(data, "frequency_penalty", -2, 2)
    for name in ("max_tokens", "max_completion_tokens"):
        _integer(data, name, 1, MAX_TOKENS_LIMIT)
    _integer(data, "n", 1, 1, message="'n' must be 1: the gateway serves one choice per request.")
    _integer(data, "seed", -(2**63), 2**63 - 1)
    stop = data.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("'stop' must be a string or a list of up to 4 strings.", param="stop")
    for name in ("stream", "logprobs", "store", "parallel_tool_calls"):
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(f"'{name}' must be true or false.", param=name)
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    _integer(data, "top_logprobs", 0, 20)
    _validate_logit_bias(data.get("logit_bias"))
    tools = data.get("tools")
    if tools is not None:
        _validate_tools(tools)
    _validate_tool_choice(data)
    fmt = data.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and isinstance(fmt.get("type"), str)):
        raise InvalidRequest(
            "'response_format' must be an object with a 'type'.", param="response_format"
        )
    return data


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", param="messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable
            raise InvalidRequest(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {role!r}.",
                param=f"{where}.role",
            )
        content = m.get("content")
        if content is None:
            if role == "assistant" and m.get("tool_calls"):
                continue
            raise InvalidRequest(f"'{where}.content' is required.", param=f"{where}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if not isinstance(kind, str) or kind not in PART_TYPES:
                    raise InvalidRequest(
                        f"'{where}.content[{j}]' must be a content part with a 'type' of "
                        f"{', '.join(sorted(PART_TYPES))}.",
                        param=f"{where}.content[{j}]",
                    )
                _validate_part(part, kind, f"{where}.content[{j}]")
        elif not isinstance(content, str):
            raise InvalidRequest(
                f"'{where}.content' must be a string or a list of parts.", param=f"{where}.content"
            )


# What each content part type carries, as OpenAI's spec has it: the field and its JSON type.
PART_PAYLOADS: dict[str, tuple[str, type, str]] = {
    "text": ("text", str, "a string"),
    "refusal": ("refusal", str, "a string"),
    "image_url": ("image_url", dict, "an object with a 'url'"),
    "input_audio": ("input_audio", dict, "an object with 'data' and 'format'"),
    "file": ("file", dict, "an object"),
}


def _validate_part(part: dict, kind: str, where: str) -> None:
    name, kind_type, what = PART_PAYLOADS[kind]
    value = part.get(name)
    if not isinstance(value, kind_type):
        raise InvalidRequest(
            f"'{where}.{name}' is required for a '{kind}' part and must be {what}.",
            param=f"{where}.{name}",
        )
    if kind == "image_url" and not isinstance(value.get("url"), str):
        raise InvalidRequest(
            f"'{where}.image_url.url' must be a string (a URL or a data: URI).",
            param=f"{where}.image_url.url",
        )


def _identifier(value: str, param: str) -> None:
    if CONTROL.search(value):
        raise InvalidRequest(
            f"'{param}' must not contain NUL or other control characters.", param=param
        )


def _validate_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object of strings.", param="metadata")
    for key, value in metadata.items():
        _identifier(key, "metadata")
        if not isinstance(value, str):
            raise InvalidRequest(f"'metadata.{key}' must be a string.", param=f"metadata.{key}")
        if "\x00" in value:
            raise InvalidRequest(
                f"'metadata.{key}' must not contain NUL characters.", param=f"metadata.{key}"
            )


def _validate_logit_bias(bias: Any) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and -100 <= v <= 100 for v in bias.values()
    ):
        raise InvalidRequest(
            "'logit_bias' must be an object mapping token ids to integers from -100 to 100.",
            param="logit_bias",
        )


def _validate_tool_choice(data: dict) -> None:
    if "tool_choice" not in data:
        return
    choice = data["tool_choice"]
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        return
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        return
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or an object with a 'type'.",
        param="tool_choice",
    )


def _validate_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list.", param="tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(
                f"'tools[{i}]' must be a function tool with a name.", param=f"tools[{i}]"
            )
        parameters = fn.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"'tools[{i}].function.parameters' must be a JSON Schema object.",
                param=f"tools[{i}].function.parameters",
            )


def _number(data: dict, name: str, low: float, high: float) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low} and {high}.", param=name)


def _integer(data: dict, name: str, low: int, high: int, *, message: str | None = None) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            message or f"'{name}' must be an integer between {low} and {high}.", param=name
        )


def upstream_body(data: dict[str, Any]) -> dict[str, Any]:
    """The body sent to providers: the client's request without the streaming switches."""
    return {k: v for k, v in data.items() if k not in STREAM_FIELDS}
