"""End to end: the official `openai` SDK → the gateway on a loopback port → loopback servers
speaking the real OpenAI and Anthropic wire formats."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import (
    make_feature,
    make_key,
    make_loopback_providers,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.loopback import cut, fail, garbage, ok, slow, stall, stream_error, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]  # 17 chars: 5 prompt tokens upstream


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    feature = make_feature(team, "chatbot")
    key, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch, read_timeout=0.5)
    local = make_provider(
        "vllm", kind="openai_compatible", base_url=openai_server.base_url, options={}
    )
    sim = make_provider("sim", kind="simulated", options={"latency_ms": 0})
    gpt = make_model(
        "gpt-4o",
        oa,
        input_price="2.50",
        output_price="10.00",
        cached_input_per_mtok=Decimal("1.25"),
    )
    claude = make_model(
        "claude-sonnet",
        an,
        input_price="3.00",
        output_price="15.00",
        cached_input_per_mtok=Decimal("0.30"),
        cache_write_per_mtok=Decimal("3.75"),
    )
    make_model("llama", local, input_price="0.10", output_price="0.20")
    make_model("sim-model", sim, input_price="1", output_price="2")
    set_fallbacks(gpt, claude)
    return {"team": team, "feature": feature, "key": key, "secret": secret}


def client(server, world, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", **headers},
    )


def drained() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet", "llama", "sim-model"])
def test_each_provider_kind_answers_json_and_stream(gateway_server, world, model):
    sdk = client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    answer = sdk.chat.completions.create(model=model, messages=HELLO)
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    chunks = list(
        sdk.chat.completions.create(
            model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    records = drained()
    assert [r.status for r in records] == ["ok", "ok"]
    assert records[0].cost_usd == records[1].cost_usd > 0
    assert records[0].served_model == model


def test_streamed_and_plain_calls_cost_the_same_hand_computed_amount(gateway_server, world):
    sdk = client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    # 5 prompt tokens at $2.50/M + 6 completion tokens ("Hello from the loopback server." = 5
    # words; the loopback counts pieces) … computed from what the provider reported:
    usage = raw.parse().usage
    expected = (
        Decimal(usage.prompt_tokens) * Decimal("2.50")
        + Decimal(usage.completion_tokens) * Decimal("10.00")
    ) / Decimal(1_000_000)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == expected
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    last = list(stream)[-1]
    assert Decimal(last.usage.model_extra["cost_usd"]) == expected
    plain, streamed = drained()
    assert plain.cost_usd == streamed.cost_usd == expected
    assert plain.stream is False and streamed.stream is True


def test_anthropic_cache_tokens_are_priced_at_their_own_rates(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(ok(prompt_tokens=100, cached_tokens=1000, cache_write_tokens=2000))
    sdk = client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    answer = sdk.chat.completions.create(model="claude-sonnet", messages=HELLO)
    assert answer.usage.prompt_tokens == 3100
    assert answer.usage.prompt_tokens_details.cached_tokens == 1000
    out = answer.usage.completion_tokens
    expected = (
        100 * Decimal("3.00")
        + 1000 * Decimal("0.30")
        + 2000 * Decimal("3.75")
        + out * Decimal("15.00")
    ) / Decimal(1_000_000)
    (record,) = drained()
    assert record.cost_usd == expected
    assert (record.cached_tokens, record.cache_write_tokens) == (1000, 2000)


def test_second_identical_request_is_a_cache_hit_with_no_upstream_call(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world)
    first = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    second = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.headers["x-gateway-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(openai_server.requests) == 1
    miss, hit = drained()
    assert hit.cache == "hit" and hit.cost_usd == 0 and hit.saved_usd == miss.cost_usd


def test_a_cached_json_answer_replays_as_a_stream_and_vice_versa(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world)
    plain = sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    replayed = list(sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    assert (
        "".join(c.choices[0].delta.content or "" for c in replayed)
        == plain.choices[0].message.content
    )
    other = [{"role": "user", "content": "Another question"}]
    streamed = list(sdk.chat.completions.create(model="gpt-4o", messages=other, stream=True))
    as_json = sdk.chat.completions.create(model="gpt-4o", messages=other)
    assert as_json.choices[0].message.content == "".join(
        c.choices[0].delta.content or "" for c in streamed
    )
    assert len(openai_server.requests) == 2


def test_tool_call_answers_pass_through_and_are_not_cached(gateway_server, world, openai_server):
    openai_server.script(tool_call("lookup", {"q": "x"}), tool_call("lookup", {"q": "x"}))
    sdk = client(gateway_server, world)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for _ in range(2):
        answer = sdk.chat.completions.create(model="gpt-4o", messages=HELLO, tools=tools)
        assert answer.choices[0].message.tool_calls[0].function.name == "lookup"
    assert len(openai_server.requests) == 2
    assert openai_server.requests[0].body["tools"] == tools


@pytest.mark.parametrize(
    "failure",
    [fail(500), fail(429, retry_after=1), slow(2.0), garbage()],
    ids=["500", "429", "timeout", "garbage"],
)
def test_it_falls_back_from_openai_to_anthropic(gateway_server, world, openai_server, failure):
    openai_server.script(failure)
    sdk = client(gateway_server, world)
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.headers["x-gateway-model"] == "claude-sonnet"
    assert raw.headers["x-gateway-provider"] == "anthropic"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.parse().choices[0].message.content
    (record,) = drained()
    assert record.attempts == 2 and record.served_model == "claude-sonnet"
    assert record.attempt_log[0]["error"]


def test_a_streamed_request_falls_back_before_the_first_byte(gateway_server, world, openai_server):
    openai_server.script(fail(503))
    sdk = client(gateway_server, world)
    chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (record,) = drained()
    assert record.served_model == "claude-sonnet" and record.status == "ok"


def test_a_provider_400_is_returned_as_it_is_without_fallback(
    gateway_server, world, openai_server, anthropic_server
):
    openai_server.script(fail(400, message="Invalid value for 'temperature'"))
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "temperature" in caught.value.message
    assert anthropic_server.requests == []
    (record,) = drained()
    assert record.status == "error" and record.http_status == 400


def test_every_provider_failing_is_a_502_listing_each_attempt(
    gateway_server, world, openai_server, anthropic_server
):
    openai_server.script(fail(500))
    anthropic_server.script(fail(529))
    sdk = client(gateway_server, world)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert body["code"] == "all_providers_failed"
    assert "gpt-4o (openai)" in body["message"] and "claude-sonnet (anthropic)" in body["message"]
    assert "sk-test-openai-secret" not in body["message"]


@pytest.mark.parametrize(
    "failure",
    [cut(after=3), stream_error(after=3), stall(after=3)],
    ids=["cut", "error-event", "stall"],
)
def test_a_stream_failing_after_the_first_byte_ends_with_an_error_event(
    gateway_server, world, openai_server, failure
):
    openai_server.script(failure)
    sdk = client(gateway_server, world)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True):
            received.append(chunk)
    assert received, "the stream had started before it failed"
    assert "incomplete" in str(caught.value.message)
    (record,) = drained()
    assert record.status == "stream_error" and record.served_model == "gpt-4o"


def test_models_lists_the_enabled_models(gateway_server, world):
    names = {m.id for m in client(gateway_server, world).models.list()}
    assert names == {"gpt-4o", "claude-sonnet", "llama", "sim-model"}


def test_every_response_carries_the_gateway_headers(gateway_server, world):
    response = httpx.post(
        f"{gateway_server.base_url}/chat/completions",
        json={"model": "sim-model", "messages": HELLO},
        headers={"Authorization": f"Bearer {world['secret']}", "X-Gateway-Feature": "chatbot"},
    )
    assert response.status_code == 200
    for name in (
        "x-request-id",
        "x-gateway-model",
        "x-gateway-provider",
        "x-gateway-cache",
        "x-gateway-cost-usd",
        "x-gateway-attempts",
    ):
        assert response.headers[name]
