"""POST /v1/embeddings and GET /v1/models, /v1/models/{id} against OpenAI's schemas (issue
25): embeddings answers (floats, base64, several inputs, token arrays, `dimensions`; from
OpenAI, simulated and from the cache), every model entry, and requests drawn from the
spec's CreateEmbeddingRequest (seeded): each valid one answered, each invalid one a 400 in
OpenAI's envelope naming the field, none reaching the provider."""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import pytest
from schemathesis.generation import GenerationMode

from tests.conformance.conftest import (
    EMBEDDING_MODEL,
    OPENAI_MODEL,
    SIMULATED_EMBEDDING,
    SIMULATED_MODEL,
)
from tests.conformance.openai_spec import (
    EMBEDDINGS,
    check_answer,
    conforms,
    count,
    generated,
)

pytestmark = pytest.mark.django_db(transaction=True)
REQUEST_REF = "#/components/schemas/CreateEmbeddingRequest"
VALID = int(os.environ.get("CONFORMANCE_EMBEDDINGS_VALID", "60"))
INVALID = int(os.environ.get("CONFORMANCE_EMBEDDINGS_INVALID", "60"))


def check_embeddings(answer: dict[str, Any]) -> None:
    """The answer against CreateEmbeddingResponse. The spec's `Embedding.embedding` is an
    array of numbers only, while OpenAI sends (and the SDKs decode) a base64 string for
    `encoding_format: base64` (docs/openai-spec.md): such a vector is checked to be
    little-endian float32 bytes, and the answer as it reads decoded."""
    decoded = []
    for item in answer["data"]:
        vector = item["embedding"]
        if isinstance(vector, str):
            raw = base64.b64decode(vector, validate=True)
            assert raw and len(raw) % 4 == 0, vector[:100]
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        decoded.append({**item, "embedding": vector})
    check_answer("CreateEmbeddingResponse", {**answer, "data": decoded})


def embed(client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    response = client.post("/embeddings", json=body, headers=headers)
    assert response.status_code == 200, response.text
    check_embeddings(response.json())
    return response.json()


@pytest.mark.parametrize("model", [EMBEDDING_MODEL, SIMULATED_EMBEDDING])
def test_embeddings_answers_conform(client, model):
    assert len(embed(client, model=model, input="Paris")["data"][0]["embedding"]) > 1
    assert isinstance(
        embed(client, model=model, input="Paris", encoding_format="base64")["data"][0]["embedding"],
        str,
    )
    assert len(embed(client, model=model, input=["Paris", "Rome", "Oslo"])["data"]) == 3
    embed(client, model=model, input=[1212, 318, 257])
    embed(client, model=model, input=[[1212, 318], [257]], user="u-1")


def test_embeddings_with_dimensions_and_from_the_cache_conform(client, openai_server):
    cached = {"X-Gateway-Cache-TTL": "60"}
    first = embed(client, cached, model=EMBEDDING_MODEL, input="Paris", dimensions=64)
    assert len(first["data"][0]["embedding"]) == 64
    hit = embed(client, cached, model=EMBEDDING_MODEL, input="Paris", dimensions=64)
    assert hit["data"] == first["data"]
    assert len(openai_server.requests) == 1


def test_the_model_list_and_every_model_conform(client):
    response = client.get("/models")
    assert response.status_code == 200
    check_answer("ListModelsResponse", response.json())
    ids = {entry["id"] for entry in response.json()["data"]}
    assert {OPENAI_MODEL, SIMULATED_MODEL, EMBEDDING_MODEL, SIMULATED_EMBEDDING} <= ids
    for model_id in sorted(ids):
        one = client.get(f"/models/{model_id}")
        assert one.status_code == 200, one.text
        check_answer("Model", one.json())


def test_model_errors_conform(client):
    unknown = client.get("/models/nope")
    assert unknown.status_code == 404
    check_answer("ErrorResponse", unknown.json())
    assert unknown.json()["error"]["param"] == "model"
    refused = client.get("/models", headers={"Authorization": "Bearer x"})
    assert refused.status_code == 401
    check_answer("ErrorResponse", refused.json())


def test_embeddings_errors_conform(client):
    for body, status, param in [
        ({"model": EMBEDDING_MODEL, "input": ""}, 400, "input"),
        ({"model": EMBEDDING_MODEL, "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"model": EMBEDDING_MODEL, "input": "x", "encoding_format": "int8"}, 400, None),
        ({"model": EMBEDDING_MODEL, "input": "x", "extra": 1}, 400, "extra"),
        ({"model": "nope", "input": "x"}, 404, "model"),
        ({"model": OPENAI_MODEL, "input": "x"}, 400, "model"),  # a chat model
    ]:
        response = client.post("/embeddings", json=body)
        assert response.status_code == status, (body, response.text)
        check_answer("ErrorResponse", response.json())
        if param:
            assert response.json()["error"]["param"] == param, response.text


def as_the_gateway_embeds(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A valid body with the gateway's documented additions (docs/openai-spec.md): a model
    it serves, no empty string to embed (the spec's text says so, its schema does not),
    token ids from 0 to 2**31 - 1, and `dimensions` at most the model's."""
    body = {**body, "model": model}
    value = body["input"]
    if value == "" or (isinstance(value, list) and "" in value):
        body["input"] = "x" if value == "" else [v or "x" for v in value]
    elif isinstance(value, list) and value and isinstance(value[0], int):
        body["input"] = [min(max(v, 0), 2**31 - 1) for v in value]
    elif isinstance(value, list) and value and isinstance(value[0], list):
        body["input"] = [[min(max(v, 0), 2**31 - 1) for v in row] for row in value]
    if body.get("dimensions") is not None:
        body["dimensions"] = min(body["dimensions"], 1536)
    return body


def test_every_generated_valid_embeddings_request_is_answered(client):
    refused = []
    for raw in generated(GenerationMode.POSITIVE, VALID, EMBEDDINGS, REQUEST_REF):
        body = as_the_gateway_embeds(raw, EMBEDDING_MODEL)
        assert conforms("CreateEmbeddingRequest", body) is None, body
        response = client.post("/embeddings", json=body)
        count(EMBEDDINGS, "valid requests accepted", ok=response.status_code == 200)
        if response.status_code != 200:
            refused.append((response.status_code, response.text[:300], body))
            continue
        check_embeddings(response.json())
    assert not refused, f"{len(refused)} valid requests refused: {refused[:3]}"


def test_every_generated_invalid_embeddings_request_is_a_400(client, openai_server):
    accepted: list[Any] = []
    for raw in generated(GenerationMode.NEGATIVE, INVALID, EMBEDDINGS, REQUEST_REF):
        body = raw
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            body = {**body, "model": EMBEDDING_MODEL}
        # As the gateway reads it: null is "not sent" (docs/openai-spec.md).
        read = {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body
        if not isinstance(read, bytes) and conforms("CreateEmbeddingRequest", read) is None:
            continue
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(
            "/embeddings", content=content, headers={"content-type": "application/json"}
        )
        error = response.json() if response.status_code == 400 else None
        refused = error is not None and conforms("ErrorResponse", error) is None
        refused = refused and (not isinstance(body, dict) or bool(error["error"]["param"]))
        count(EMBEDDINGS, "invalid requests refused", ok=refused)
        if not refused:
            accepted.append((response.status_code, response.text[:300], body))
    assert not accepted, f"{len(accepted)} invalid requests not refused, e.g. {accepted[:3]}"
    assert openai_server.requests == []
