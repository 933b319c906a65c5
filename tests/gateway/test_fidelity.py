"""No silent drops (issue 19), end to end: the official `openai` SDK → the gateway on a
loopback port → loopback servers speaking the real OpenAI and Anthropic wire formats.

Structured output on Claude is a forced tool whose input becomes the message content; what a
provider cannot honour is a 400 naming the parameter and the model, or a skipped model in a
fallback chain, or dropped on purpose when the model's `drop_params` lists it."""

from __future__ import annotations

import openai
import orjson
import pytest
from pydantic import BaseModel

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
from tests.loopback import fail, ok, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "Which is the capital of France, and how many live there?"}]
PARIS = {"city": "Paris", "population": 2102650}


class City(BaseModel):
    city: str
    population: int


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    sim = make_provider("sim", kind="simulated", options={"latency_ms": 0})
    gpt = make_model("gpt-4o-mini", oa)
    claude = make_model("claude-haiku", an)
    make_model("claude-lenient", an, drop_params=["seed", "logprobs", "top_logprobs"])
    sim_model = make_model("sim-model", sim)
    set_fallbacks(gpt, claude)
    set_fallbacks(sim_model, claude)
    return {"secret": secret}


def client(server, world) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"},
    )


def drained() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))


def forced_tool(recorded) -> tuple[dict, dict]:
    """(the tool, the tool_choice) of the Anthropic request the gateway sent."""
    body = recorded.body
    assert len(body["tools"]) == 1
    return body["tools"][0], body["tool_choice"]


# Structured output on Claude


def test_parse_gets_its_object_from_claude(gateway_server, world, anthropic_server):
    # The loopback answers a forced tool like Claude: one tool_use block under that name.
    anthropic_server.script(tool_call("whatever", PARIS))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.parse(model="claude-haiku", messages=ASK, response_format=City)
    choice = answer.choices[0]
    assert choice.message.parsed == City(**PARIS)
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls in (None, [])
    tool, choice_sent = forced_tool(anthropic_server.requests[0])
    assert choice_sent == {"type": "tool", "name": "City"}
    assert tool["name"] == "City"
    # The SDK's strict schema, as the SDK sent it in response_format.
    assert set(tool["input_schema"]["properties"]) == {"city", "population"}
    assert tool["input_schema"]["required"] == ["city", "population"]
    assert tool["input_schema"]["additionalProperties"] is False


def test_a_streamed_parse_gets_its_object_from_claude(gateway_server, world, anthropic_server):
    anthropic_server.script(tool_call("whatever", PARIS))
    sdk = client(gateway_server, world)
    with sdk.chat.completions.stream(
        model="claude-haiku", messages=ASK, response_format=City
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1  # input_json_delta events arrive as content deltas
    assert orjson.loads("".join(deltas)) == PARIS
    assert final.choices[0].message.parsed == City(**PARIS)
    assert final.choices[0].finish_reason == "stop"
    assert anthropic_server.requests[0].body["stream"] is True
    assert forced_tool(anthropic_server.requests[0])[1] == {"type": "tool", "name": "City"}


def test_json_object_on_claude_is_json_text(gateway_server, world, anthropic_server):
    anthropic_server.script(tool_call("whatever", {"answer": 42}))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.create(
        model="claude-haiku", messages=ASK, response_format={"type": "json_object"}
    )
    assert orjson.loads(answer.choices[0].message.content) == {"answer": 42}
    assert answer.choices[0].finish_reason == "stop"
    tool, choice_sent = forced_tool(anthropic_server.requests[0])
    assert tool["input_schema"] == {"type": "object"}
    assert choice_sent == {"type": "tool", "name": "json_object"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_schema_request_falling_back_from_gpt_to_claude_keeps_its_schema(
    gateway_server, world, openai_server, anthropic_server, stream
):
    openai_server.script(fail(503))
    anthropic_server.script(tool_call("whatever", PARIS))
    sdk = client(gateway_server, world)
    if stream:
        with sdk.chat.completions.stream(
            model="gpt-4o-mini", messages=ASK, response_format=City
        ) as events:
            answer = events.get_final_completion()
    else:
        answer = sdk.chat.completions.parse(model="gpt-4o-mini", messages=ASK, response_format=City)
    assert answer.choices[0].message.parsed == City(**PARIS)
    # OpenAI was asked with the schema, as sent; Claude with the forced tool.
    assert openai_server.requests[0].body["response_format"]["type"] == "json_schema"
    assert forced_tool(anthropic_server.requests[0])[1]["name"] == "City"
    (record,) = drained()
    assert record.served_model == "claude-haiku" and record.attempts == 2


def test_gpt_answers_a_schema_request_itself(gateway_server, world, openai_server):
    openai_server.script(ok(orjson.dumps(PARIS).decode()))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.parse(model="gpt-4o-mini", messages=ASK, response_format=City)
    assert answer.choices[0].message.parsed == City(**PARIS)


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_schema_request_with_its_own_tools_calls_a_tool_then_answers_in_the_schema(
    gateway_server, world, anthropic_server, stream
):
    """An agent's turn: Claude may call the request's tool or give the answer; either comes
    back as OpenAI would send it (tool_calls, or JSON content)."""
    anthropic_server.script(tool_call("lookup", {"q": "Paris"}), tool_call("City", PARIS))
    sdk = client(gateway_server, world)

    def ask(messages):
        if not stream:
            return sdk.chat.completions.parse(
                model="claude-haiku", messages=messages, response_format=City, tools=[LOOKUP]
            )
        with sdk.chat.completions.stream(
            model="claude-haiku", messages=messages, response_format=City, tools=[LOOKUP]
        ) as events:
            return events.get_final_completion()

    first = ask(ASK).choices[0]
    assert first.finish_reason == "tool_calls"
    (call,) = first.message.tool_calls
    assert (call.function.name, call.function.parsed_arguments) == ("lookup", {"q": "Paris"})
    assert first.message.parsed is None
    sent = anthropic_server.requests[0].body
    assert [t["name"] for t in sent["tools"]] == ["lookup", "City"]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}

    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "lookup", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Paris: 2,102,650 people"},
    ]
    second = ask(history).choices[0]
    assert second.finish_reason == "stop"
    assert second.message.parsed == City(**PARIS)
    assert not second.message.tool_calls


def test_a_schema_named_like_one_of_the_tools_is_a_400(gateway_server, world, anthropic_server):
    tools = [{**LOOKUP, "function": {**LOOKUP["function"], "name": "City"}}]
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.parse(
            model="claude-haiku", messages=ASK, response_format=City, tools=tools
        )
    assert caught.value.body["message"] == (
        "`response_format` named 'City' like one of the request's tools is not supported by "
        "model claude-haiku (anthropic)."
    )
    assert caught.value.param == "response_format"
    assert anthropic_server.requests == []


# Providers that cannot do it


def test_a_schema_request_skips_a_model_that_cannot_honour_it(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(tool_call("whatever", PARIS))
    sdk = client(gateway_server, world)
    raw = sdk.chat.completions.with_raw_response.parse(
        model="sim-model", messages=ASK, response_format=City
    )
    assert raw.headers["x-gateway-model"] == "claude-haiku"
    assert raw.parse().choices[0].message.parsed == City(**PARIS)
    (record,) = drained()
    assert record.attempt_log[0] == {
        "model": "sim-model",
        "provider": "sim",
        "error": "cannot serve: `response_format` is not supported by model sim-model (simulated).",
    }
    assert record.attempt_log[1]["error"] == ""


def test_a_schema_request_no_model_can_honour_is_a_400(gateway_server, world, monkeypatch):
    sim = make_provider("sim2", kind="simulated", options={"latency_ms": 0})
    make_model("sim-alone", sim)
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.parse(model="sim-alone", messages=ASK, response_format=City)
    assert caught.value.body["message"] == (
        "`response_format` is not supported by model sim-alone (simulated)."
    )
    assert caught.value.code == "unsupported_parameter"
    (record,) = drained()
    assert record.http_status == 400 and record.status == "error"


# Parameters Claude cannot honour


@pytest.mark.parametrize(
    "param",
    [
        {"logprobs": True},
        {"top_logprobs": 2},
        {"seed": 7},
        {"frequency_penalty": 0.5},
        {"presence_penalty": 0.5},
        {"logit_bias": {"1234": 5}},
        {"reasoning_effort": "low"},
    ],
    ids=lambda p: next(iter(p)),
)
def test_what_claude_cannot_honour_is_a_400_naming_it(
    gateway_server, world, anthropic_server, param
):
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude-haiku", messages=ASK, **param)
    name = next(iter(param))
    expected = f"`{name}` is not supported by model claude-haiku (anthropic)."
    assert caught.value.body["message"] == expected
    assert caught.value.param == name
    assert anthropic_server.requests == []


def test_temperature_above_claudes_range_is_a_400_not_clamped(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude-haiku", messages=ASK, temperature=1.8)
    assert caught.value.body["message"] == (
        "`temperature` 1.8 is outside the range 0..1 accepted by model claude-haiku (anthropic)."
    )
    assert anthropic_server.requests == []
    sdk.chat.completions.create(model="claude-haiku", messages=ASK, temperature=0.4)
    assert anthropic_server.requests[0].body["temperature"] == 0.4


def test_drop_params_drops_the_listed_parameters_on_purpose(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.create(
        model="claude-lenient", messages=ASK, seed=7, logprobs=True, top_logprobs=2
    )
    assert answer.choices[0].message.content
    sent = anthropic_server.requests[0].body
    assert not {"seed", "logprobs", "top_logprobs"} & set(sent)
    # What is not listed is still refused.
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="claude-lenient", messages=ASK, presence_penalty=1)
    assert "`presence_penalty` is not supported by model claude-lenient" in caught.value.message


def test_a_fallback_skips_a_model_that_would_refuse(gateway_server, world, openai_server):
    """gpt-4o-mini fails; claude-haiku cannot do logprobs: no model could serve, but one
    failed, so this is the provider failure (502/503), and the log says why each was left."""
    openai_server.script(fail(503))
    sdk = client(gateway_server, world)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK, logprobs=True)
    assert caught.value.status_code in (502, 503)
    (record,) = drained()
    assert record.attempt_log[1]["error"] == (
        "cannot serve: `logprobs` is not supported by model claude-haiku (anthropic)."
    )


# Legacy functions / function_call

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ROME = {"city": "Rome"}


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_legacy_functions_are_tools_upstream_and_function_call_back(
    gateway_server, world, openai_server, anthropic_server, model
):
    server = anthropic_server if model == "claude-haiku" else openai_server
    server.script(tool_call("get_weather", ROME))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.create(
        model=model, messages=ASK, functions=[WEATHER], function_call={"name": "get_weather"}
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call.name == "get_weather"
    assert orjson.loads(choice.message.function_call.arguments) == ROME
    assert not choice.message.tool_calls
    sent = server.requests[0].body
    assert "functions" not in sent and "function_call" not in sent
    if model == "claude-haiku":
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["tool_choice"] == {
            "type": "tool",
            "name": "get_weather",
            "disable_parallel_tool_use": True,
        }
    else:
        assert sent["tools"] == [{"type": "function", "function": WEATHER}]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("model", ["claude-haiku", "gpt-4o-mini"])
def test_streamed_legacy_functions_come_back_as_function_call_deltas(
    gateway_server, world, openai_server, anthropic_server, model
):
    server = anthropic_server if model == "claude-haiku" else openai_server
    server.script(tool_call("get_weather", ROME))
    sdk = client(gateway_server, world)
    chunks = list(
        sdk.chat.completions.create(model=model, messages=ASK, functions=[WEATHER], stream=True)
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any(d.tool_calls for d in deltas)
    calls = [d.function_call for d in deltas if d.function_call]
    assert calls[0].name == "get_weather"
    assert orjson.loads("".join(c.arguments or "" for c in calls)) == ROME
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "function_call"


def test_legacy_history_becomes_tool_use_and_tool_result(gateway_server, world, anthropic_server):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
        },
        {"role": "function", "name": "get_weather", "content": "sunny, 24C"},
    ]
    anthropic_server.script(ok("It is sunny in Rome."))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.create(
        model="claude-haiku", messages=history, functions=[WEATHER]
    )
    assert answer.choices[0].message.content == "It is sunny in Rome."
    assert answer.choices[0].finish_reason == "stop"
    turns = anthropic_server.requests[0].body["messages"]
    use = turns[1]["content"][0]
    result = turns[2]["content"][0]
    assert (use["type"], use["name"], use["input"]) == ("tool_use", "get_weather", ROME)
    assert (result["type"], result["tool_use_id"]) == ("tool_result", use["id"])
    assert result["content"] == "sunny, 24C"


def test_a_cached_structured_answer_replays_as_json_and_only_for_the_schema(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(tool_call("whatever", PARIS), ok("Paris, about two million."))
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "60"},
    )
    ask = {"model": "claude-haiku", "messages": ASK, "response_format": City}
    first = sdk.chat.completions.parse(**ask)
    again = sdk.chat.completions.with_raw_response.parse(**ask)
    assert again.headers["x-gateway-cache"] == "hit"
    assert again.parse().choices[0].message.parsed == first.choices[0].message.parsed
    with sdk.chat.completions.stream(**ask) as events:
        assert events.get_final_completion().choices[0].message.parsed == City(**PARIS)
    assert len(anthropic_server.requests) == 1
    # The same question without the schema is another answer, not the cached JSON.
    plain = sdk.chat.completions.create(model="claude-haiku", messages=ASK)
    assert plain.choices[0].message.content == "Paris, about two million."
    assert len(anthropic_server.requests) == 2


def test_functions_with_tools_is_a_400(gateway_server, world):
    sdk = client(gateway_server, world)
    tools = [{"type": "function", "function": WEATHER}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="claude-haiku", messages=ASK, functions=[WEATHER], tools=tools
        )
    assert caught.value.param == "functions"


# Streams keep the upstream's usage details


def test_a_stream_keeps_the_upstream_usage_details_with_the_cost(
    gateway_server, world, openai_server
):
    openai_server.script(ok("Paris.", reasoning_tokens=7, cached_tokens=3))
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "60"},
    )
    ask = {
        "model": "gpt-4o-mini",
        "messages": ASK,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for expected_cost in (None, "0"):  # live, then replayed from the cache
        (last,) = [c for c in sdk.chat.completions.create(**ask) if c.usage]
        usage = last.usage
        assert usage.completion_tokens_details.reasoning_tokens == 7
        assert usage.completion_tokens_details.rejected_prediction_tokens == 0
        assert usage.prompt_tokens_details.cached_tokens == 3
        assert usage.prompt_tokens_details.audio_tokens == 0
        assert usage.model_extra["cost_usd"]
        if expected_cost:
            assert usage.model_extra["cost_usd"] == expected_cost
    assert len(openai_server.requests) == 1


def test_a_self_hosted_server_declared_without_json_is_skipped_for_a_schema(
    gateway_server, world, openai_server, anthropic_server
):
    local = make_provider(
        "vllm",
        kind="openai_compatible",
        base_url=openai_server.base_url,
        options={"unsupported_params": ["response_format"]},
    )
    llama = make_model("llama", local)
    set_fallbacks(llama, make_model("claude-backup", world_anthropic()))
    anthropic_server.script(tool_call("whatever", PARIS))
    sdk = client(gateway_server, world)
    answer = sdk.chat.completions.parse(model="llama", messages=ASK, response_format=City)
    assert answer.choices[0].message.parsed == City(**PARIS)
    assert openai_server.requests == []  # never asked
    (record,) = drained()
    assert record.attempt_log[0]["error"] == (
        "cannot serve: `response_format` is not supported by model llama (openai_compatible)."
    )
    # Without the schema the same server is asked as usual.
    assert sdk.chat.completions.create(model="llama", messages=ASK).choices[0].message.content
    assert len(openai_server.requests) == 1


def world_anthropic():
    from gateway.models import Provider

    return Provider.objects.get(name="anthropic")
