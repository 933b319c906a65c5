"""End to end: the official `openai` SDK's `client.responses` → the gateway's /v1/responses
→ the chat pipeline → loopback OpenAI and Anthropic servers speaking their real wire formats."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.inbound.conftest import MODELS, drained, expected_cost
from tests.loopback import fail, ok, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class City(BaseModel):
    name: str
    population: int


def client(server, world) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", "X-Gateway-Cache-TTL": "0"},
    )


def upstream_of(model, openai_server, anthropic_server):
    return openai_server if model == "gpt-4o-mini" else anthropic_server


@pytest.mark.parametrize("model", MODELS)
def test_responses_create_answers_a_response_and_costs_exact_tokens(
    gateway_server, world, model, openai_server, anthropic_server
):
    sdk = client(gateway_server, world)
    raw = sdk.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="Say hello, please", max_output_tokens=64
    )
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from the loopback server."
    assert response.store is False
    cost = expected_cost(model, response.usage.input_tokens, response.usage.output_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
    (record,) = drained()
    assert record.status == "ok" and record.served_model == model and record.cost_usd == cost
    assert record.input_tokens == response.usage.input_tokens
    received = upstream_of(model, openai_server, anthropic_server).requests[-1]
    sent = received.body
    if model == "gpt-4o-mini":  # passed through to OpenAI's own /v1/responses
        assert received.path == "/v1/responses"
        assert (sent["instructions"], sent["max_output_tokens"]) == ("Be brief.", 64)
        assert sent["store"] is False
    else:
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 64


@pytest.mark.parametrize("model", MODELS)
def test_responses_stream_sends_the_responses_event_sequence(gateway_server, world, model):
    sdk = client(gateway_server, world)
    with sdk.responses.stream(model=model, input="Say hello, please") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Hello from the loopback server."
    (record,) = drained()
    assert record.stream is True and record.status == "ok"
    assert final.usage.output_tokens == record.output_tokens == 5
    assert final.usage.input_tokens == record.input_tokens
    assert record.cost_usd == expected_cost(model, record.input_tokens, record.output_tokens)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_function_tools_round_trip_with_function_call_output(
    gateway_server, world, model, streamed, openai_server, anthropic_server
):
    upstream = upstream_of(model, openai_server, anthropic_server)
    upstream.script(tool_call("get_weather", {"city": "Paris"}), ok("It is sunny."))
    sdk = client(gateway_server, world)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if streamed:
        with sdk.responses.stream(model=model, input=ask, tools=[WEATHER]) as stream:
            first = stream.get_final_response()
    else:
        first = sdk.responses.create(model=model, input=ask, tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = sdk.responses.create(
        model=model,
        tools=[WEATHER],
        input=[
            *ask,
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "It is sunny."
    sent = upstream.requests[-1].body
    if model == "gpt-4o-mini":  # the items as sent, to OpenAI's own /v1/responses
        assert sent["input"][1]["type"] == "function_call"
        assert sent["input"][1]["call_id"] == call.call_id
        assert sent["input"][2] == {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": "sunny",
        }
    else:
        assert sent["messages"][1]["content"][-1]["id"] == call.call_id
        assert sent["messages"][2]["content"][0]["tool_use_id"] == call.call_id


@pytest.mark.parametrize("model", MODELS)
def test_responses_parse_returns_the_schema_as_an_object(
    gateway_server, world, model, openai_server, anthropic_server
):
    answer = {"name": "Paris", "population": 2100000}
    upstream = upstream_of(model, openai_server, anthropic_server)
    if model == "gpt-4o-mini":
        upstream.script(ok(json.dumps(answer)))
    else:  # Claude answers through the forced tool that carries the schema
        upstream.script(tool_call("City", answer))
    sdk = client(gateway_server, world)
    parsed = sdk.responses.parse(model=model, input="The biggest French city?", text_format=City)
    assert parsed.output_parsed == City(**answer)
    sent = upstream.requests[-1].body
    if model == "gpt-4o-mini":
        assert sent["text"]["format"]["type"] == "json_schema"
        assert sent["text"]["format"]["name"] == "City"
    else:
        assert sent["tool_choice"] == {"type": "tool", "name": "City"}


def test_stored_responses_are_refused_with_a_400_that_says_why(gateway_server, world):
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="gpt-4o-mini", input="Hi", previous_response_id="resp_1")
    error = refused.value.body
    assert error["param"] == "previous_response_id" and error["code"] == "unsupported_parameter"
    assert "does not keep responses" in error["message"]
    with pytest.raises(openai.BadRequestError) as stored:
        sdk.responses.create(model="gpt-4o-mini", input="Hi", store=True)
    assert stored.value.body["param"] == "store"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(gateway_server, world, extra, param):
    body = {"model": "gpt-4o-mini", "input": "Hi", **extra}
    response = httpx.post(
        gateway_server.base_url + "/responses",
        headers={"Authorization": f"Bearer {world['secret']}"},
        json=body,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_a_provider_failure_is_openais_error_envelope_and_a_ledger_row(
    gateway_server, world, openai_server
):
    openai_server.script(fail(500))
    sdk = client(gateway_server, world)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model="gpt-4o-mini", input="Hi")
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "all_providers_failed"
    (record,) = drained()
    assert record.status == "error"
