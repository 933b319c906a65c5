"""The circuit breaker is shared by gateway processes through Redis: one process's failures
open it for every other process, and a probe from any of them closes it again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import requires_real_redis
from tests.factories import (
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.gateway_server import free_port
from tests.loopback import fail

pytestmark = [pytest.mark.slow, requires_real_redis, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Say hello, please"}]


def start_gateway(port: int) -> subprocess.Popen:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "test-secret",
        "DEBUG": "1",
        "GATEWAY_CIRCUIT_FAILURES": "2",
        "GATEWAY_CIRCUIT_COOLDOWN_S": "2",
        "GATEWAY_LEDGER_IN_PROCESS": "0",
        "TEST_OPENAI_KEY": "sk-test",
        "TEST_ANTHROPIC_KEY": "sk-ant",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "gatewaysite.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(150):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=0.5)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gateway process did not start")


@pytest.fixture
def two_gateways():
    ports = [free_port(), free_port()]
    processes = [start_gateway(port) for port in ports]
    yield [f"http://127.0.0.1:{port}/v1" for port in ports]
    for process in processes:
        process.terminate()
        process.wait(10)


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
    openai_server, anthropic_server, two_gateways
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_KEY",
        options={},
    )
    an = make_provider(
        "anthropic",
        kind="anthropic",
        base_url=anthropic_server.base_url,
        api_key_env="TEST_ANTHROPIC_KEY",
        options={},
    )
    gpt = make_model("gpt-4o", oa)
    set_fallbacks(gpt, make_model("claude", an))
    first, second = two_gateways

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
