"""The conformance suite's world: one key, and a model per kind of provider (OpenAI and
Anthropic on their loopback servers, the built-in simulated one), with the official limits
the suite relies on, and an embedding model on OpenAI and on the simulated provider."""

from __future__ import annotations

import httpx
import pytest

from tests.conformance.openai_spec import summary
from tests.factories import make_key, make_loopback_providers, make_model, make_provider, make_team

OPENAI_MODEL, ANTHROPIC_MODEL, SIMULATED_MODEL = "gpt-4o-mini", "claude-haiku", "sim-model"
EMBEDDING_MODEL, SIMULATED_EMBEDDING = "text-embedding-3-small", "sim-embed"
MAX_OUTPUT = 16_384


def pytest_terminal_summary(terminalreporter) -> None:
    lines = summary()
    if len(lines) > 1:
        terminalreporter.section("OpenAI spec conformance")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch) -> str:
    """The key's secret."""
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    make_model(OPENAI_MODEL, oa, max_output_tokens=MAX_OUTPUT, context_window=1_000_000)
    make_model(ANTHROPIC_MODEL, an, max_output_tokens=MAX_OUTPUT, context_window=1_000_000)
    sim = make_provider("sim")
    make_model(SIMULATED_MODEL, sim, max_output_tokens=MAX_OUTPUT)
    embedding = {"output_price": "0", "mode": "embedding"}
    make_model(EMBEDDING_MODEL, oa, dimensions=1536, **embedding)
    make_model(SIMULATED_EMBEDDING, sim, dimensions=8, **embedding)
    _, secret = make_key(make_team("conformance"))
    return secret


@pytest.fixture
def client(gateway_server, world):
    """An HTTP client on the gateway with the key; the cache bypassed unless a test says."""
    headers = {"Authorization": f"Bearer {world}", "X-Gateway-Cache-TTL": "0"}
    with httpx.Client(base_url=gateway_server.base_url, headers=headers, timeout=30) as c:
        yield c
