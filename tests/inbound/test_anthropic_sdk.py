"""End to end: the official `anthropic` SDK → the gateway's /v1/messages → the chat pipeline
→ loopback OpenAI and Anthropic servers speaking their real wire formats."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import httpx
import pytest

from tests.inbound.conftest import MODELS, drained, expected_cost
from tests.loopback import fail, ok, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(server, world, *, bearer: bool = False, **headers) -> anthropic.Anthropic:
    base = server.base_url.removesuffix("/v1")  # the SDK adds /v1/messages itself
    auth = {"auth_token": world["secret"]} if bearer else {"api_key": world["secret"]}
    return anthropic.Anthropic(
        base_url=base,
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", "X-Gateway-Cache-TTL": "0", **headers},
        **auth,
    )


@pytest.mark.parametrize("model", MODELS)
def test_messages_create_answers_in_anthropic_format_and_costs_exact_tokens(
    gateway_server, world, model
):
    sdk = client(gateway_server, world)
    raw = sdk.messages.with_raw_response.create(
        model=model, max_tokens=100, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the loopback server."
    assert message.stop_reason == "end_turn"
    cost = expected_cost(model, message.usage.input_tokens, message.usage.output_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
    assert raw.headers["x-gateway-model"] == model
    (record,) = drained()
    assert record.status == "ok" and record.served_model == model
    assert record.cost_usd == cost
    assert (record.input_tokens, record.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream_sends_anthropics_event_sequence_with_usage(gateway_server, world, model):
    sdk = client(gateway_server, world)
    with sdk.messages.stream(model=model, max_tokens=100, messages=HELLO) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].text == "Hello from the loopback server."
    assert final.stop_reason == "end_turn"
    (record,) = drained()
    assert record.stream is True and record.status == "ok"
    assert final.usage.output_tokens == record.output_tokens == 5
    assert final.usage.input_tokens == record.input_tokens
    assert record.cost_usd == expected_cost(model, record.input_tokens, record.output_tokens)


@pytest.mark.parametrize("model", MODELS)
def test_tools_round_trip_with_tool_use_and_tool_result(
    gateway_server, world, model, openai_server, anthropic_server
):
    upstream = openai_server if model == "gpt-4o-mini" else anthropic_server
    upstream.script(tool_call("get_weather", {"city": "Paris"}), ok("It is sunny."))
    sdk = client(gateway_server, world)
    first = sdk.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER],
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
    second = sdk.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert second.content[0].text == "It is sunny."
    sent = upstream.requests[-1].body
    if model == "gpt-4o-mini":  # chat: the call and its result as OpenAI messages
        assert sent["messages"][1]["tool_calls"][0]["id"] == use.id
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    else:  # back to Anthropic blocks through the Anthropic adapter
        assert sent["messages"][1]["content"][-1]["type"] == "tool_use"
        assert sent["messages"][2]["content"][0]["tool_use_id"] == use.id
    assert [r.status for r in drained()] == ["ok", "ok"]


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_use_arrives_as_input_json_deltas(
    gateway_server, world, model, openai_server, anthropic_server
):
    upstream = openai_server if model == "gpt-4o-mini" else anthropic_server
    upstream.script(tool_call("get_weather", {"city": "Paris"}))
    sdk = client(gateway_server, world)
    with sdk.messages.stream(
        model=model, max_tokens=200, tools=[WEATHER], messages=HELLO
    ) as stream:
        final = stream.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_bearer_auth_and_system_blocks_stop_sequences_and_images_are_translated(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world, bearer=True)
    sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},  # no longer a named argument of the SDK
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                    },
                ],
            }
        ],
    )
    sent = openai_server.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief.\n\nBe kind."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBOR"},
    }
    assert sent["stop"] == ["END"] and sent["temperature"] == 0.5
    assert sent["max_tokens"] == 50


def test_errors_come_in_anthropics_shape_with_fitting_statuses(
    gateway_server, world, openai_server
):
    wrong = anthropic.Anthropic(
        base_url=gateway_server.base_url.removesuffix("/v1"), api_key="nope", max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert denied.value.status_code == 401
    assert denied.value.body["type"] == "error"
    assert denied.value.body["error"]["type"] == "authentication_error"
    sdk = client(gateway_server, world)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="no-such-model", max_tokens=10, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"
    openai_server.script(fail(500))
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"
    assert [r.status for r in drained()] == ["error", "error"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"cache_control": {"type": "ephemeral"}}, "cache_control"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        (
            {"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]},
            "mcp_servers",
        ),
        ({"service_tier": "auto"}, "service_tier"),
    ],
)
def test_what_no_model_is_sent_is_refused_with_a_400_naming_it(
    gateway_server, world, openai_server, extra, param
):
    sdk = client(gateway_server, world)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="claude-sonnet", max_tokens=10, messages=HELLO, extra_body=extra)
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert f"`{param}`" in refused.value.body["error"]["message"]
    assert openai_server.requests == []
    (record,) = drained()  # refused like any chat request, on the team's record
    assert (record.status, record.http_status, record.error_type) == (
        "error",
        400,
        "unsupported_parameter",
    )


def test_a_request_without_a_key_is_told_both_ways_to_send_one(gateway_server, world):
    response = httpx.post(
        gateway_server.base_url + "/messages",
        headers={"anthropic-version": "2023-06-01"},
        json={"model": "gpt-4o-mini", "max_tokens": 10, "messages": HELLO},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in response.json()["error"]["message"]


def test_the_anthropic_version_header_is_required(gateway_server, world):
    response = httpx.post(
        gateway_server.base_url + "/messages",
        headers={"x-api-key": world["secret"]},
        json={"model": "gpt-4o-mini", "max_tokens": 10, "messages": HELLO},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "anthropic-version: header is required."


def test_count_tokens_answers_an_estimate_without_calling_a_provider(
    gateway_server, world, openai_server, anthropic_server
):
    sdk = client(gateway_server, world)
    counted = sdk.messages.count_tokens(model="claude-sonnet", messages=HELLO, system="Be brief.")
    # "Be brief." + a newline + "Say hello, please": ceil(27 / 4) + 4 framing per message
    assert counted.input_tokens == 7 + 2 * 4
    assert openai_server.requests == anthropic_server.requests == []
    assert drained() == []
