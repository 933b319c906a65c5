"""Embeddings in the adapter protocol: the normalized request and answer, and OpenAI's wire
format for them (OpenAI and OpenAI-compatible servers speak the same one).

An adapter that serves embeddings sets `serves_embeddings = True` and implements
`embed(request) -> Embeddings`. Upstream is always asked for floats: the gateway encodes
base64 itself when the client asks for it, so the cache keeps one form of each answer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from gateway.providers.base import Usage, token_count


@dataclass(slots=True)
class EmbeddingRequest:
    """A validated OpenAI embeddings request. `body` is the client's JSON (`input`,
    `dimensions`, `user`...); the adapter sends `upstream_model` as the model."""

    body: dict[str, Any]
    upstream_model: str = ""
    dimensions: int | None = None  # the length each vector must have, when known

    @property
    def inputs(self) -> list[Any]:
        """The inputs as a list: each a string or a list of token ids."""
        value = self.body["input"]
        if isinstance(value, str) or (value and isinstance(value[0], int)):
            return [value]
        return list(value)


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]  # one per input, in the inputs' order
    usage: Usage  # input tokens only
    model: str  # the model as the provider named it


def embeddings_from_openai(data: Any, expected: int) -> Embeddings:
    """OpenAI's `{"object": "list", "data": [{"index", "embedding"}], "usage"}` answer.

    Raises ValueError/TypeError/KeyError on anything else (a retryable `bad_response`): a
    vector that is not a list of numbers, a count of vectors other than `expected`."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TypeError("an embeddings answer has a 'data' list")
    items = sorted(data["data"], key=lambda item: item["index"])
    vectors = []
    for item in items:
        vector = item["embedding"]
        if not isinstance(vector, list):
            raise TypeError("an embedding is not a list of numbers")
        # Every element a number, checked in C (a Python loop over 1,536 floats cost more
        # than the rest of the request): struct refuses anything else.
        try:
            struct.pack(f"<{len(vector)}d", *vector)
        except struct.error:
            raise TypeError("an embedding is not a list of numbers") from None
        vectors.append(vector)
    if len(vectors) != expected:
        raise ValueError(f"{len(vectors)} embeddings for {expected} inputs")
    raw = data.get("usage")
    if isinstance(raw, dict) and "prompt_tokens" in raw:
        usage = Usage(input_tokens=token_count(raw, "prompt_tokens"))
    else:  # an OpenAI-compatible server may report none: the gateway estimates
        usage = Usage(reported=False)
    return Embeddings(vectors=vectors, usage=usage, model=str(data.get("model") or ""))
