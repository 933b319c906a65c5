"""Requests drawn from OpenAI's own request schema (issue 25): every valid one is accepted,
every invalid one is a 400 in OpenAI's error envelope naming the field, and never reaches a
provider, whichever would serve it (here Anthropic, which would not refuse it itself)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from schemathesis.generation import GenerationMode

from gateway.spec import spec
from tests.conformance.conftest import ANTHROPIC_MODEL, MAX_OUTPUT, OPENAI_MODEL
from tests.conformance.openai_spec import (
    CHAT,
    as_the_gateway_takes,
    check_answer,
    conforms,
    count,
    generated,
    sse_events,
)

pytestmark = pytest.mark.django_db(transaction=True)
# Seeded draws (the same every run); raise them for a longer hunt.
VALID = int(os.environ.get("CONFORMANCE_VALID", "200"))
INVALID = int(os.environ.get("CONFORMANCE_INVALID", "100"))


def check_answer_to(body: dict[str, Any], response) -> None:
    if body.get("stream"):
        for event in sse_events(response.text):
            check_answer("CreateChatCompletionStreamResponse", event)
    else:
        check_answer("CreateChatCompletionResponse", response.json())


def test_every_generated_valid_request_is_accepted(client):
    refused = []
    for raw in generated(GenerationMode.POSITIVE, VALID):
        body = as_the_gateway_takes(raw, model=OPENAI_MODEL, max_output=MAX_OUTPUT)
        assert conforms("CreateChatCompletionRequest", body) is None
        response = client.post("/chat/completions", json=body)
        count(CHAT, "valid requests accepted", ok=response.status_code == 200)
        if response.status_code != 200:
            refused.append((response.status_code, response.text[:300], body))
            continue
        check_answer_to(body, response)
    reasons = sorted({text for _, text, _ in refused})
    assert not refused, f"{len(refused)} valid requests refused: {reasons}"


def _aimed_at_anthropic(body: Any) -> tuple[Any, bool]:
    """The body for the Anthropic model (if it names one at all), and whether it is still
    invalid once the gateway's additions apply (a default `model`, nulls not sent)."""
    if not isinstance(body, dict):
        return body, True
    # A missing or null `model` is "auto" to the gateway (routed, not refused): aimed at the
    # Anthropic model like a named one, so the rest of the body decides.
    if body.get("model") is None or isinstance(body["model"], str):
        body = {**body, "model": ANTHROPIC_MODEL}
    # As the gateway reads it: a null where any part of the spec allows one is "not sent".
    read = {k: v for k, v in body.items() if v is not None or k not in spec().nullable}
    return body, conforms("CreateChatCompletionRequest", read) is not None


def test_every_generated_invalid_request_is_refused_in_openais_envelope(client, anthropic_server):
    accepted: list[Any] = []
    for raw in generated(GenerationMode.NEGATIVE, INVALID):
        body, invalid = _aimed_at_anthropic(raw)
        if not invalid:  # e.g. only `model` was missing: the gateway routes it ("auto")
            continue
        before = len(accepted)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(
            "/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        error = response.json() if response.status_code == 400 else None
        if error is None or conforms("ErrorResponse", error) is not None:
            accepted.append((response.status_code, response.text[:300], body))
        elif isinstance(body, dict) and not error["error"]["param"]:
            accepted.append(("no param", response.text[:300], body))
        count(CHAT, "invalid requests refused", ok=len(accepted) == before)
    assert not accepted, f"{len(accepted)} invalid requests not refused, e.g. {accepted[:3]}"
    assert anthropic_server.requests == []
