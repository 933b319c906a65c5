"""POST /v1/embeddings as an Operation, for OpenAI-kind, OpenAI-compatible and simulated
providers (`serves_embeddings`).

- `input`: a string, a list of strings, a list of token ids, or a list of token-id lists.
- `dimensions` is passed upstream; `encoding_format` (float | base64) is applied by the
  gateway: upstream is always asked for floats, base64 is the little-endian float32 bytes of
  each vector, as OpenAI sends it.
- Priced by input tokens (output price × 0), reserved and settled like chat: the hold is the
  input's upper bound (UTF-8 bytes of strings, the length of token arrays) at the chain's
  dearest input price.
- Cached by default (embeddings are deterministic): the key is the input, the dimensions and
  the chain (gateway/cache.py).
- Falls back only to a model with the same (known) dimensions: vectors of another length, or
  of another model's space, would not mix with the ones a client already stored.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from gateway import cache, tokens
from gateway.cache import CachedAnswer
from gateway.errors import InvalidRequest
from gateway.money import Cost, cost_of
from gateway.operations.base import Answer, Operation
from gateway.providers.base import ProviderAdapter, ProviderError, Usage
from gateway.providers.embeddings import EmbeddingRequest, Embeddings
from gateway.services import Call, attempt_models, finish
from gateway.snapshot import ModelSnap
from gateway.validation import validate_model_name

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MAX_DIMENSIONS = 16384  # above every embedding model today (3,072 to 8,192)
FORMATS = ("float", "base64")
# CreateEmbeddingRequest's properties; it allows no others (additionalProperties: false).
KNOWN = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


class EmbeddingsOperation(Operation):
    endpoint = "embeddings"
    mode = "embedding"
    path = "/v1/embeddings"

    def parse(self, call: Call, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        if "model" not in data:
            raise InvalidRequest("'model' is required.", param="model")
        for name in data:
            if name not in KNOWN:
                raise InvalidRequest(
                    f"Unrecognized request argument supplied: {name}.",
                    param=name,
                    code="unknown_parameter",
                )
        validate_model_name(data)
        _validate_input(data.get("input"))
        dims = data.get("dimensions")
        if isinstance(dims, float) and dims.is_integer():  # 64.0 is an integer in JSON Schema
            dims = data["dimensions"] = int(dims)
        if dims is not None and (
            isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS
        ):
            raise InvalidRequest(
                f"'dimensions' must be an integer between 1 and {MAX_DIMENSIONS}.",
                param="dimensions",
            )
        fmt = data.get("encoding_format")
        if fmt is not None and fmt not in FORMATS:
            raise InvalidRequest(
                "'encoding_format' must be float or base64.", param="encoding_format"
            )
        if data.get("user") is not None and not isinstance(data["user"], str):
            raise InvalidRequest("'user' must be a string.", param="user")
        call.stream = False
        return data

    def estimate(self, call: Call) -> int:
        return sum(
            tokens.estimate_text(item) if isinstance(item, str) else len(item)
            for item in _inputs(call.body)
        )

    def input_upper_bound(self, call: Call) -> int:
        """Byte-level BPE never makes more tokens than UTF-8 bytes (gateway/tokens.py)."""
        return sum(
            len(item.encode()) if isinstance(item, str) else len(item)
            for item in _inputs(call.body)
        )

    def fit_chain(self, call: Call, chain: list[ModelSnap]) -> list[ModelSnap]:
        chain = super().fit_chain(call, chain)
        first = chain[0]
        same = [m for m in chain[1:] if first.dimensions and m.dimensions == first.dimensions]
        return [first, *same]

    def cache_key(self, call: Call, chain: list[ModelSnap]) -> str | None:
        assert call.team is not None  # authenticated first
        return cache.embeddings_key_for(
            team=call.team, body=call.body, chain=tuple(m.name for m in chain)
        )

    def ledger_content(self, call: Call) -> Any:
        return call.body.get("input")

    def provider_request(
        self, call: Call, model: ModelSnap, adapter: ProviderAdapter, cap: int | None
    ) -> tuple[EmbeddingRequest | None, tuple[str, str] | None]:
        if not adapter.serves_embeddings:
            kind = model.provider.kind
            return None, ("model", f"Embeddings are not served by model {model.name} ({kind}).")
        body = {k: v for k, v in call.body.items() if k not in ("encoding_format", "model")}
        body["model"] = call.body["model"]
        dims = call.body.get("dimensions") or model.dimensions
        return EmbeddingRequest(body=body, upstream_model=model.upstream_id, dimensions=dims), None

    async def serve(self, call: Call) -> Answer:
        result: Embeddings = await attempt_models(call, _embed_checked)
        usage = result.usage
        if not usage.reported:
            usage = Usage(input_tokens=call.prompt_tokens, reported=False)
        assert call.served is not None  # attempt_models returned: a model answered
        cost = cost_of(usage, call.served.prices)
        body = _answer(result.vectors, result.model, usage)
        await finish(call, usage=usage, cost=cost, body=body)
        return Answer(body=self.client_body(call, body), headers=call.headers(cost))

    async def cached(self, call: Call, hit: CachedAnswer, cost: Cost) -> Answer:
        return Answer(body=self.client_body(call, hit.body), headers=call.headers(cost))

    def client_body(self, call: Call, body: dict[str, Any]) -> dict[str, Any]:
        """The answer in the encoding the client asked for (kept as floats)."""
        if call.body.get("encoding_format") != "base64":
            return body
        data = [{**item, "embedding": _base64(item["embedding"])} for item in body["data"]]
        return {**body, "data": data}


EMBEDDINGS = EmbeddingsOperation()


async def _embed_checked(adapter: ProviderAdapter, request: EmbeddingRequest) -> Embeddings:
    """Vectors of the length asked for, or a retryable bad_response (the next model)."""
    result = await adapter.embed(request)
    if request.dimensions and any(len(v) != request.dimensions for v in result.vectors):
        raise ProviderError(
            f"{adapter.config.name}: vectors of another length than {request.dimensions}",
            retryable=True,
            kind="bad_response",
        )
    return result


def _answer(vectors: list[list[float]], model: str, usage: Usage) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _inputs(body: dict[str, Any]) -> list[Any]:
    return EmbeddingRequest(body=body).inputs


def _validate_input(value: Any) -> None:
    """A string, a list of strings, a token array, or a list of token arrays; never empty."""
    problem = "'input' must be a non-empty string, a list of strings or of token arrays."
    if isinstance(value, str):
        if not value:
            raise InvalidRequest(problem, param="input")
        return
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise InvalidRequest(f"{problem} (at most {MAX_INPUTS} inputs)", param="input")
    if all(_token(x) for x in value):
        return
    # One kind throughout, as the spec's oneOf says: strings, or token arrays.
    fits, kind = (_text, "strings") if isinstance(value[0], str) else (_tokens, "token arrays")
    for i, item in enumerate(value):
        if not fits(item):
            raise InvalidRequest(
                f"{problem} 'input[{i}]' is not like 'input[0]': all non-empty {kind}.",
                param="input",
            )


def _text(item: Any) -> bool:
    return isinstance(item, str) and bool(item)


def _tokens(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(_token(x) for x in item)


def _token(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31
