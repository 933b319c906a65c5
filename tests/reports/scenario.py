"""The founding scenario's outage, replayed through the real gateway: clients use the
`openai` SDK, OpenAI (a loopback server speaking its wire format) fails, the catch-all chain
[gpt-4o-mini, gpt-4o, claude-sonnet] falls back to Claude (a loopback Anthropic), the circuit
opens, the cooldown ends and a probe closes it. Then the ledger drains as in production.

And a signed-in reader: the managers' login form, CSRF token and all."""

from __future__ import annotations

import re
import time

import openai
from django.conf import settings
from django.test import Client

from gateway import circuit, ledger
from tests.factories import (
    make_feature,
    make_key,
    make_loopback_providers,
    make_model,
    make_team,
    set_fallbacks,
)
from tests.loopback import fail

HELLO = [{"role": "user", "content": "Say hello, please"}]
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def outage_world(openai_server, anthropic_server, monkeypatch, **team) -> dict:
    acme = make_team("acme", **team)
    make_feature(acme, "chatbot")
    _, secret = make_key(acme)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    mini = make_model("gpt-4o-mini", oa, input_price="0.15", output_price="0.60")
    gpt = make_model("gpt-4o", oa, input_price="2.50", output_price="10.00")
    sonnet = make_model("claude-sonnet", an, input_price="3.00", output_price="15.00")
    set_fallbacks(mini, gpt, sonnet)
    return {"team": acme, "secret": secret}


def replay_outage(gateway_server, world, openai_server, redis_sync, *, requests: int = 6) -> None:
    """`requests` calls during the outage, then one after it: the probe that closes it.

    With the breaker opening after 2 failures, the first request fails on gpt-4o-mini and
    gpt-4o (both OpenAI) and is rescued by claude-sonnet; the circuit is then open, so the
    others skip OpenAI and go straight to claude-sonnet."""
    assert settings.GATEWAY["CIRCUIT_FAILURES"] == 2
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"},
    )
    openai_server.script(fail(503), fail(503))
    for _ in range(requests):
        answer = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        assert answer.headers["x-gateway-model"] == "claude-sonnet"
    # The cooldown is over (moved, not waited for): the next request is the probe.
    redis_sync.hset(circuit.PREFIX + "openai", "open_until", int(time.time() * 1000) - 1)
    answer = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.headers["x-gateway-model"] == "gpt-4o-mini"
    ledger.drain()


def signed_in(username: str, password: str) -> Client:
    """A browser's session: the managers' sign-in form, with its CSRF token enforced."""
    client = Client(enforce_csrf_checks=True)
    page = client.get("/reports/login/")
    token = CSRF_INPUT.search(page.content.decode()).group(1)
    done = client.post(
        "/reports/login/",
        {"username": username, "password": password, "csrfmiddlewaretoken": token},
    )
    assert done.status_code == 302, done.content[:300]
    return client
