"""The API against its own OpenAPI schema: schemathesis generates requests from /api/schema/
(each documented example, then bounded fuzzing of every operation) and sends them to the ASGI
app in-process with a valid key. No request may cause a 5xx server error, and every answer
must have a documented status, content type and body.

Driven through schemathesis's Hypothesis strategies (`as_strategy`, the API it documents for
plain `@given` tests) rather than its pytest plugin, which does not run on pytest 9.2 yet.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_budget, make_key, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db(transaction=True)
# As a TLS-terminating proxy says it: production mode would redirect plain HTTP to HTTPS.
HTTPS = {"X-Forwarded-Proto": "https"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    "POST /v1/chat/completions",
    "POST /v1/embeddings",
    "GET /v1/models",
    "GET /v1/models/{model_id}",
    "GET /v1/budget",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/responses",
    "GET /healthz",
    "GET /readyz",
]


@pytest.fixture
def fuzz_key() -> str:
    """A team with a budget and a key; the model the schema's examples name, simulated."""
    team = make_team("fuzz")
    make_budget(team, daily_limit_usd=100)
    _, secret = make_key(team)
    sim = make_provider("sim")
    make_model("gpt-4o-mini", sim, input_price="0.15", output_price="0.6")
    make_model("text-embedding-3-small", sim, output_price="0", mode="embedding", dimensions=8)
    return secret


@pytest.fixture
def api_schema(fuzz_key):
    # Production's app without the lifespan wrapper: no background ledger drainer in the test.
    from gatewaysite.asgi import http_application

    return schemathesis.openapi.from_asgi("/api/schema/", http_application, headers=HTTPS)


def operation(api_schema, label: str):
    method, path = label.split(" ", 1)
    return api_schema[path][method]


def exercise(strategy, key: str, max_examples: int, *, gateway_headers: bool = True) -> list[int]:
    statuses: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        if not gateway_headers:  # only the example's body: no generated X-Gateway-* values
            case.headers = {}
        response = case.call_and_validate(
            headers={**HTTPS, "Authorization": f"Bearer {key}"}, checks=CHECKS
        )
        statuses.append(response.status_code)

    run()
    return statuses


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzzed_requests_never_fail_and_are_answered_as_the_schema_says(
    api_schema, fuzz_key, label
):
    statuses = exercise(operation(api_schema, label).as_strategy(), fuzz_key, max_examples=50)
    assert statuses
    assert [status for status in statuses if status >= 500] == []


def test_the_documented_examples_are_served_and_match_the_schema(api_schema, fuzz_key):
    chat = operation(api_schema, "POST /v1/chat/completions")
    examples = chat.get_strategies_from_examples()
    assert len(examples) == 2  # a JSON answer and a streamed one
    statuses = exercise(st.one_of(examples), fuzz_key, max_examples=10, gateway_headers=False)
    assert set(statuses) == {200}


def test_the_schema_describes_the_public_api(client):
    response = client.get(
        "/api/schema/", headers={**HTTPS, "Accept": "application/vnd.oai.openapi+json"}
    )
    assert response.status_code == 200
    document = response.json()
    assert {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops} == set(
        OPERATIONS
    )
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    assert chat["security"] == [{"GatewayKey": []}]
    assert document["components"]["securitySchemes"]["GatewayKey"]["scheme"] == "bearer"
