"""POST /v1/responses against OpenAI's schemas (issue 25): hand-picked valid CreateResponse
bodies the gateway serves are answered with a `Response` (plain) or `ResponseStreamEvent`s
(streamed), from OpenAI, Anthropic and the simulated provider; valid ones it does not serve
(stored responses, built-in tools, background...) and invalid ones are a 400 in OpenAI's
envelope naming the parameter, and reach no provider."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, SIMULATED_MODEL
from tests.conformance.openai_spec import (
    RESPONSES,
    check_answer,
    conforms,
    count,
    named_events,
)
from tests.loopback import fail, stream_error, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,  # the spec's FunctionTool requires it (and `parameters`)
}
CITY = {
    "type": "json_schema",
    "name": "City",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "strict": True,
}
JSON_FORMATS = ({"type": "json_object"}, CITY)
HI = [{"role": "user", "content": "Name the capital of France."}]
# Valid per CreateResponse and served by the gateway (translated to chat).
SERVED: list[dict[str, Any]] = [
    {"input": "Name the capital of France."},
    {"input": HI, "instructions": "Answer in one word."},
    {"input": [{"type": "message", "role": "developer", "content": "Be brief."}, *HI]},
    {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]},
    {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                ],
            }
        ]
    },
    {"input": "Hi", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9},
    {"input": "Hi", "metadata": {"ticket": "42"}, "user": "u-1", "store": False},
    {"input": "Hi", "safety_identifier": "s-1", "prompt_cache_key": "k-1"},
    {"input": "Hi", "truncation": "disabled", "service_tier": "auto"},
    {"input": "Hi", "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False},
    {"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "weather"}},
    {"input": "Hi", "text": {"format": {"type": "text"}}},
    {"input": "Hi", "text": {"format": {"type": "json_object"}}},
    {"input": "Hi", "text": {"format": CITY}},
    {
        "input": [
            *HI,
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny."},
        ],
        "tools": [WEATHER],
    },
]
# Valid per CreateResponse, not served: a 400 naming the parameter.
NOT_SERVED: list[tuple[dict[str, Any], str]] = [
    ({"input": "Hi", "store": True}, "store"),
    ({"input": "Hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": "Hi", "conversation": "conv_1"}, "conversation"),
    ({"input": "Hi", "max_tool_calls": 3}, "max_tool_calls"),
]
# Valid per CreateResponse, passed through to OpenAI-kind models only (chat cannot carry
# them): served there, a 400 naming the parameter on any other model.
NATIVE_ONLY: list[tuple[dict[str, Any], str]] = [
    ({"input": "Hi", "truncation": "auto"}, "truncation"),
    ({"input": "Hi", "include": ["message.output_text.logprobs"]}, "include"),
    ({"input": "Hi", "top_logprobs": 2}, "top_logprobs"),
]
# Invalid per CreateResponse: a 400 naming the parameter.
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"input": 5}, "input"),
    ({"input": "Hi", "max_output_tokens": "many"}, "max_output_tokens"),
    ({"input": "Hi", "instructions": ["a"]}, "instructions"),
    ({"input": [{"role": "robot", "content": "Hi"}]}, "input[0].role"),
    ({"input": "Hi", "tools": "weather"}, "tools"),
    ({"input": "Hi", "text": "json"}, "text"),
]


def request_conforms(body: dict[str, Any]) -> str | None:
    """None when `body` follows CreateResponse. One overlap is the spec's own (docs/
    openai-spec.md): an input message with a list of content parts matches both the
    EasyInputMessage and the InputMessage branch of the item's `oneOf`, so the spec refuses
    what OpenAI and its SDKs send; such items are checked against EasyInputMessage alone,
    and the rest of the body with them set aside."""
    problem = conforms("CreateResponse", body)
    items = body.get("input")
    if problem is None or not isinstance(items, list):
        return problem
    messages = [i for i in items if "role" in i and isinstance(i.get("content"), list)]
    if not messages:
        return problem
    for item in messages:
        if (why := conforms("EasyInputMessage", item)) is not None:
            return why
    rest = [i for i in items if i not in messages] or "Hi"
    return conforms("CreateResponse", {**body, "input": rest})


def check_response(body: dict[str, Any], response) -> None:
    assert response.status_code == 200, (body, response.text)
    if body.get("stream"):
        events = named_events(response.text)
        for event in events:
            check_answer("ResponseStreamEvent", event)
        assert events[-1]["type"] == "response.completed"
        check_answer("Response", events[-1]["response"])
    else:
        check_answer("Response", response.json())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("model", [OPENAI_MODEL, ANTHROPIC_MODEL, SIMULATED_MODEL])
def test_every_served_request_is_answered_with_a_conforming_response(client, model, stream):
    for fields in SERVED:
        body = {"model": model, **fields, **({"stream": True} if stream else {})}
        assert request_conforms(body) is None, body
        response = client.post("/responses", json=body)
        if model == SIMULATED_MODEL and fields.get("text", {}).get("format") in JSON_FORMATS:
            # Documented (compatibility.md): the simulated provider writes no JSON.
            error = response.json()["error"] if response.status_code == 400 else {}
            ok = error.get("param") == "text.format"
            count(RESPONSES, "valid requests refused as documented", ok=ok)
            assert ok, response.text
            check_answer("ErrorResponse", response.json())
            continue
        count(RESPONSES, "valid requests accepted", ok=response.status_code == 200)
        check_response(body, response)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tool_call_answers_conform(client, openai_server, anthropic_server, stream):
    call = tool_call("weather", {"city": "Paris"})
    openai_server.script(call)
    anthropic_server.script(call)
    for model in (OPENAI_MODEL, ANTHROPIC_MODEL):
        body = {"model": model, "input": "Weather in Paris?", "tools": [WEATHER], "stream": stream}
        response = client.post("/responses", json=body)
        check_response(body, response)
        final = named_events(response.text)[-1]["response"] if stream else response.json()
        assert final["output"][-1]["type"] == "function_call"


@pytest.mark.parametrize(
    ("fields", "param", "valid"),
    [(f, p, True) for f, p in NOT_SERVED] + [(f, p, False) for f, p in INVALID],
)
def test_what_is_not_served_is_a_400_naming_the_parameter(
    client, openai_server, fields, param, valid
):
    body = {"model": OPENAI_MODEL, **fields}
    assert (request_conforms(body) is None) is valid, request_conforms(body)
    response = client.post("/responses", json=body)
    error = response.json().get("error") if response.status_code == 400 else None
    ok = error is not None and error["param"] == param
    ok = ok and conforms("ErrorResponse", response.json()) is None
    count(
        RESPONSES,
        "valid requests refused as documented" if valid else "invalid requests refused",
        ok=ok,
    )
    assert ok, response.text
    check_answer("ErrorResponse", response.json())
    assert openai_server.requests == []


@pytest.mark.parametrize(("fields", "param"), NATIVE_ONLY)
def test_what_only_openai_serves_is_passed_through_there_and_refused_by_name_elsewhere(
    client, openai_server, anthropic_server, fields, param
):
    body = {"model": OPENAI_MODEL, **fields}
    assert request_conforms(body) is None, request_conforms(body)
    check_response(body, client.post("/responses", json=body))
    assert openai_server.requests[-1].path == "/v1/responses"
    refused = client.post("/responses", json={**body, "model": ANTHROPIC_MODEL})
    error = refused.json().get("error") if refused.status_code == 400 else None
    ok = error is not None and error["param"] == param
    count(RESPONSES, "valid requests refused as documented", ok=ok)
    assert ok, refused.text
    check_answer("ErrorResponse", refused.json())
    assert anthropic_server.requests == []


def test_provider_failures_conform(client, openai_server):
    """A failure before the answer: OpenAI's error envelope; after a stream began: the
    `response.failed` event, its response carrying the error."""
    openai_server.script(fail(500), stream_error(after=2))
    failed = client.post("/responses", json={"model": OPENAI_MODEL, "input": "Hi"})
    assert failed.status_code >= 500, failed.text
    check_answer("ErrorResponse", failed.json())
    body = {"model": OPENAI_MODEL, "input": "Hi", "stream": True}
    events = named_events(client.post("/responses", json=body).text)
    for event in events:
        check_answer("ResponseStreamEvent", event)
    assert events[-1]["type"] == "response.failed"
    check_answer("Response", events[-1]["response"])
