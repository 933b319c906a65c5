"""The circuit breaker is shared by gateway processes through Redis: one process's failures
open it for every other process, and a probe from any of them closes it again."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.factories import (
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.loopback import fail
from tests.processes import requires_postgres, requires_real_redis

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
HELLO = [{"role": "user", "content": "Say hello, please"}]


def ask(base_url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={
            "Authorization": f"Bearer {secret}",
            "X-Gateway-Feature": "chatbot",
            "X-Gateway-Cache-TTL": "0",
        },
        timeout=10,
    )


def test_the_circuit_opens_skips_and_closes_across_two_processes(
    openai_server, anthropic_server, gateways
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    an = make_provider(
        "anthropic",
        kind="anthropic",
        base_url=anthropic_server.base_url,
        api_key_env="TEST_ANTHROPIC_API_KEY",
        options={},
    )
    gpt = make_model("gpt-4o", oa)
    set_fallbacks(gpt, make_model("claude", an))
    first, second = (
        g.base_url
        for g in gateways(2, GATEWAY_CIRCUIT_FAILURES="2", GATEWAY_CIRCUIT_COOLDOWN_S="2")
    )

    openai_server.script(fail(500), fail(500))
    for _ in range(2):  # two failures in the first process open the circuit
        assert ask(first, secret).headers["x-gateway-provider"] == "anthropic"
    assert len(openai_server.requests) == 2

    skipped = ask(second, secret)  # the second process skips the open provider
    assert skipped.headers["x-gateway-provider"] == "anthropic"
    assert len(openai_server.requests) == 2

    time.sleep(2.2)  # the cooldown passes: one probe goes through and closes the circuit
    probe = ask(second, secret)
    assert probe.headers["x-gateway-provider"] == "openai"
    assert ask(first, secret).headers["x-gateway-provider"] == "openai"
    assert len(openai_server.requests) == 4
