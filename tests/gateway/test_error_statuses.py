"""Every error a client can meet comes with OpenAI's envelope and a fitting status."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.loopback import slow

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]


@pytest.fixture
def world(openai_server, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_feature(team, "search")
    key, secret = make_key(team, rpm_limit=1000)
    oa = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    make_model("gpt-4o", oa, input_price="2.50", output_price="10.00", context_window=1000)
    make_model("sim-model", make_provider(), input_price="1", output_price="2")
    return {"team": team, "key": key, "secret": secret}


def post(server, secret, body, **headers) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", "X-Gateway-Feature": "chatbot", **headers}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


def test_a_missing_or_unknown_key_is_401(gateway_server, world):
    body = {"model": "sim-model", "messages": HELLO}
    assert_envelope(
        httpx.post(f"{gateway_server.base_url}/chat/completions", json=body), 401, "invalid_api_key"
    )
    assert_envelope(post(gateway_server, "gw-not-a-key", body), 401, "invalid_api_key")


def test_a_revoked_key_is_401(gateway_server, world):
    from django.utils import timezone

    from gateway.snapshot import store

    world["key"].revoked_at = timezone.now()
    world["key"].save()
    store().invalidate()
    error = assert_envelope(
        post(gateway_server, world["secret"], {"model": "sim-model", "messages": HELLO}),
        401,
        "revoked_api_key",
    )
    assert world["key"].prefix in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim-model"}, "messages"),
        (
            {"model": "sim-model", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "sim-model", "messages": HELLO, "temperature": 7}, "temperature"),
        ({"model": "sim-model", "messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"model": "sim-model", "messages": HELLO, "max_tokens": 10**9}, "max_tokens"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(gateway_server, world, body, param):
    error = assert_envelope(post(gateway_server, world["secret"], body), 400, "invalid_request")
    assert error["param"] == param
    assert param.split("[")[0] in error["message"]


def test_an_unknown_feature_is_400_listing_the_teams_features(gateway_server, world):
    response = post(
        gateway_server,
        world["secret"],
        {"model": "sim-model", "messages": HELLO},
        **{"X-Gateway-Feature": "poetry"},
    )
    error = assert_envelope(response, 400, "unknown_feature")
    assert "chatbot" in error["message"] and "search" in error["message"]


def test_an_unknown_model_is_404(gateway_server, world):
    response = post(gateway_server, world["secret"], {"model": "gpt-9", "messages": HELLO})
    assert_envelope(response, 404, "model_not_found")


def test_a_prompt_too_large_for_every_window_is_400(gateway_server, world):
    huge = [{"role": "user", "content": "word " * 5000}]
    response = post(gateway_server, world["secret"], {"model": "gpt-4o", "messages": huge})
    assert_envelope(response, 400, "context_length_exceeded")


def test_json_answers_and_errors_are_sent_whole_with_their_length(gateway_server, world):
    ok = post(gateway_server, world["secret"], {"model": "sim-model", "messages": HELLO})
    refused = post(gateway_server, world["secret"], {"model": "gpt-9", "messages": HELLO})
    for response in (ok, refused):
        assert "transfer-encoding" not in response.headers
        assert response.headers["content-length"] == str(len(response.content))
    assert ok.status_code == 200 and refused.status_code == 404


def test_a_body_over_the_limit_is_413(gateway_server, world, settings):
    settings.GATEWAY = {**settings.GATEWAY, "MAX_BODY_BYTES": 1000}
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "x" * 2000}]}
    assert_envelope(post(gateway_server, world["secret"], body), 413, "request_too_large")


def test_a_chunked_body_over_the_limit_is_413(gateway_server, world, settings):
    """No Content-Length to refuse it by: the gateway keeps only what the limit allows."""
    settings.GATEWAY = {**settings.GATEWAY, "MAX_BODY_BYTES": 1000}
    chunk = b'{"model": "sim-model", "messages": [{"role": "user", "content": "' + b"x" * 500

    def chunked():
        yield chunk
        for _ in range(20):
            yield b"x" * 500
        yield b'"}]}'

    response = httpx.post(
        f"{gateway_server.base_url}/chat/completions",
        content=chunked(),
        headers={"Authorization": f"Bearer {world['secret']}", "X-Gateway-Feature": "chatbot",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "request_too_large")


def test_a_body_that_is_not_json_is_a_clear_4xx(gateway_server, world):
    headers = {"Authorization": f"Bearer {world['secret']}", "X-Gateway-Feature": "chatbot"}
    url = f"{gateway_server.base_url}/chat/completions"
    not_json = httpx.post(
        url, content=b"{nope", headers={**headers, "Content-Type": "application/json"}
    )
    assert_envelope(not_json, 400, "invalid_request")
    bad_utf8 = httpx.post(
        url, content=b'{"model": "\xff"}', headers={**headers, "Content-Type": "application/json"}
    )
    assert_envelope(bad_utf8, 400, "invalid_request")
    form = httpx.post(url, content=b"a=b", headers={**headers, "Content-Type": "text/plain"})
    assert_envelope(form, 415, "unsupported_media_type")


def test_a_budget_refusal_is_429_and_the_sdk_does_not_retry_it(gateway_server, world):
    make_budget(world["team"], daily_limit_usd="0.000001", monthly_limit_usd="100")
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=3,
        default_headers={"X-Gateway-Feature": "chatbot"},
    )
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="sim-model", messages=HELLO)
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert int(response.headers["retry-after"]) > 0
    assert caught.value.body["code"] == "budget_exceeded"
    assert "daily" in caught.value.body["message"]
    ledger.drain()
    assert UsageRecord.objects.get().status == "refused"  # one request: the SDK did not retry


def test_a_rate_limit_refusal_is_429_rate_limited(gateway_server, world):
    world["key"].rpm_limit = 1
    world["key"].save()
    body = {"model": "sim-model", "messages": HELLO}
    assert post(gateway_server, world["secret"], body).status_code == 200
    refused = post(gateway_server, world["secret"], body)
    assert_envelope(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1


def test_a_passed_deadline_is_504(gateway_server, world, openai_server, settings):
    settings.GATEWAY = {**settings.GATEWAY, "REQUEST_DEADLINE_S": 0.3}
    openai_server.script(slow(2.0))
    response = post(gateway_server, world["secret"], {"model": "gpt-4o", "messages": HELLO})
    assert_envelope(response, 504, "deadline_exceeded")
