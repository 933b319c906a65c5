"""OpenAI's own API description, vendored, and the validators compiled from it once.

`openapi-chat.json` is the part of openai/openai-openapi (commit f85dbe2, info.version
2.3.0, MIT: see LICENSE) the gateway serves: the chat request and answer schemas, the error
envelope, the models, embeddings and Responses API request and answer schemas (the last
ones for tests/conformance), with everything they reference (`extract.py` regenerates it).
Only the chat request is compiled at startup; every other schema when first asked for.

The file mixes OpenAPI 3.0's `nullable: true` with 3.1's `{"type": "null"}`; `to_json_schema`
turns the first into the second, so plain JSON Schema 2020-12 validators read it. Two
validators per schema: jsonschema_rs (compiled Rust) answers "valid?" on every request, and
only for a refused one does the Python `jsonschema` walk the errors to name the field, so
the hot path pays microseconds (bench/spec_validation.py) and the error path stays exact.
"""

from __future__ import annotations

import functools
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import orjson

SOURCE = Path(__file__).with_name("openapi-chat.json")
REQUEST = "CreateChatCompletionRequest"
COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
# Properties whose value picks the branch of a oneOf/anyOf (OpenAI's `discriminator`s).
DISCRIMINATORS = ("role", "type")
MAX_DETAIL = 200  # characters of a validator's message quoted back (it may quote the value)


def to_json_schema(value: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(value, list):
        return [to_json_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: to_json_schema(v) for k, v in value.items() if k != "nullable"}
    if value.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an instance does not follow its schema: the field (`messages[0].content`) and a
    sentence a client can act on."""

    param: str
    message: str


class Schema:
    """One named component schema, compiled both ways."""

    def __init__(self, document: dict[str, Any], name: str) -> None:
        root = {**reachable(document, [name]), "$ref": f"#/components/schemas/{name}"}
        self.name = name
        self.fast = jsonschema_rs.Draft202012Validator(root, validate_formats=False)
        self.exact = jsonschema.Draft202012Validator(root)

    def is_valid(self, instance: Any) -> bool:
        return self.fast.is_valid(instance)

    def problem(self, instance: Any) -> Problem | None:
        if self.fast.is_valid(instance):
            return None
        error = _deepest(self.exact.iter_errors(instance))
        if error is None:  # the two validators disagree: trust the compiled one, say so
            return Problem("body", "The request does not follow OpenAI's API specification.")
        return describe(error)


class Spec:
    """The vendored description: its version and a compiled `Schema` per component asked."""

    def __init__(self, source: Path = SOURCE) -> None:
        raw = orjson.loads(source.read_bytes())
        self.version: str = raw["info"]["version"]
        self.document = {"components": to_json_schema(raw["components"])}
        self.request = self.schema(REQUEST)
        self.nullable = self._nullable_fields()

    @functools.cache  # noqa: B019 - one Spec per process (`spec()`), never collected
    def schema(self, name: str) -> Schema:
        return Schema(self.document, name)

    def _nullable_fields(self) -> frozenset[str]:
        """The request's top-level fields where null is valid: null there means "not sent".

        A field counts when any schema declaring it admits null: the spec composes the chat
        request from shared parts (allOf) that sometimes disagree (`top_logprobs` is
        nullable in the chat request's own properties, not in the Responses API's part)."""
        declared = _properties(self.document, REQUEST)
        document = reachable(self.document, [REQUEST])
        return frozenset(
            name
            for name, schemas in declared.items()
            if any(_admits_null(document, schema) for schema in schemas)
        )


PREFIX = "#/components/schemas/"


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        found = {ref[len(PREFIX) :]} if isinstance(ref, str) else set()
        for item in value.values():
            found |= _refs(item)
        return found
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()


def reachable(document: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The document with only the component schemas `roots` reach: a validator compiles
    what it is given, so the chat request's costs no more for the other endpoints' schemas
    sharing the file (extract.py walks the same references)."""
    schemas = document["components"]["schemas"]
    kept: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in kept:
            kept[name] = schemas[name]
            todo.extend(_refs(schemas[name]) - kept.keys())
    return {"components": {"schemas": kept}}


def _properties(document: dict[str, Any], name: str) -> dict[str, list[Any]]:
    """Every property a schema declares, through its allOf and $refs: name -> its schemas."""
    schemas = document["components"]["schemas"]
    schema = schemas[name]
    found: dict[str, list[Any]] = {}
    for part in [schema, *schema.get("allOf", [])]:
        if "$ref" in part:
            for key, subs in _properties(document, part["$ref"].rsplit("/", 1)[1]).items():
                found.setdefault(key, []).extend(subs)
        for key, sub in part.get("properties", {}).items():
            found.setdefault(key, []).append(sub)
    return found


def _admits_null(document: dict[str, Any], schema: Any) -> bool:
    root = {**document, **schema} if isinstance(schema, dict) else schema
    return jsonschema_rs.Draft202012Validator(root, validate_formats=False).is_valid(None)


@functools.cache
def spec() -> Spec:
    """The process's one Spec, compiled on first use (gateway.apps warms it at startup)."""
    return Spec()


def _deepest(errors: Any) -> jsonschema.ValidationError | None:
    """The error to report: `jsonschema.exceptions.best_match`, except that inside a
    oneOf/anyOf it follows the branch the value meant, the one whose discriminator (`role`,
    `type`) and JSON type it matches, rather than the error the heuristic rates best."""
    key = jsonschema.exceptions.relevance
    error = max(errors, key=key, default=None)
    while error is not None and error.context:
        branches: dict[Any, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = [errs for errs in branches.values() if not any(_missed(e) for e in errs)]
        if len(meant) == 1:
            error = max(meant[0], key=key)
            continue
        if not meant:  # no branch is the value's own: say what is wrong with the value
            return error
        smallest = heapq.nsmallest(2, error.context, key=key)
        if len(smallest) == 2 and key(smallest[0]) == key(smallest[1]):
            return error
        error = smallest[0]
    return error


def _missed(sub: jsonschema.ValidationError) -> bool:
    """Whether `sub` says the value is not of its branch at all: its discriminator differs,
    or (for a value that is no object) its JSON type does."""
    if len(sub.path) == 1 and sub.path[0] in DISCRIMINATORS:  # paths relative to `parent`
        return sub.validator in ("enum", "const")
    if not sub.path:
        if sub.validator == "type":
            return True
        if sub.validator == "required" and isinstance(sub.instance, dict):
            wanted = set(sub.validator_value) & set(DISCRIMINATORS)
            return bool(wanted - sub.instance.keys())
    return False


def param_of(path: Any) -> str:
    """A JSON path as OpenAI names parameters: `messages[0].content[1].text`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: jsonschema.ValidationError) -> Problem:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next((r for r in error.validator_value if r not in error.instance), "")
        param = param_of([*path, missing])
        return Problem(param, f"Missing required parameter: '{param}'.")
    if error.validator in ("oneOf", "anyOf") and isinstance(error.instance, dict):
        for key in DISCRIMINATORS:
            needed = (c for c in error.context if c.validator == "required" and not c.path)
            if key not in error.instance and any(key in c.validator_value for c in needed):
                param = param_of([*path, key])
                return Problem(param, f"Missing required parameter: '{param}'.")
            if key in error.instance:
                param = param_of([*path, key])
                value = json.dumps(error.instance[key], default=str)[:MAX_DETAIL]
                return Problem(param, f"Invalid value for '{param}': {value} is not one allowed.")
    param = param_of(path) or "body"
    types = [c.validator_value for c in error.context if c.validator == "type" and not c.path]
    if types and len(types) == len(error.context):
        wanted = " or ".join(t if isinstance(t, str) else " or ".join(t) for t in types)
        return Problem(param, f"Invalid type for '{param}': expected {wanted}.")
    detail = error.message
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    return Problem(param, f"Invalid value for '{param}': {detail}.")
