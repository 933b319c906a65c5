"""Every kind of answer the gateway gives, checked against OpenAI's response schemas
(issue 25): passed through from OpenAI (plain, streamed chunk by chunk, tool calls, custom
tool calls, n choices, logprobs, refusals), translated from Anthropic, simulated, replayed
from the cache both ways, the model list, and errors (before and after a stream began)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conformance.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, SIMULATED_MODEL
from tests.conformance.openai_spec import check_answer, sse_events
from tests.loopback import fail, ok, stream_error, tool_call

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "Name the capital of France."}]
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}
SQL = {"type": "custom", "custom": {"name": "sql", "description": "Runs one SQL query."}}
USAGE = {"stream_options": {"include_usage": True}}


def plain(client, model: str, headers: dict[str, str] | None = None, **fields) -> dict:
    response = client.post(
        "/chat/completions", json={"model": model, "messages": ASK, **fields}, headers=headers
    )
    assert response.status_code == 200, response.text
    check_answer("CreateChatCompletionResponse", response.json())
    return response.json()


def streamed(client, model: str, headers: dict[str, str] | None = None, **fields) -> list:
    body = {"model": model, "messages": ASK, "stream": True, **USAGE, **fields}
    response = client.post("/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    chunks = sse_events(response.text)
    for chunk in chunks:
        check_answer("CreateChatCompletionStreamResponse", chunk)
    return chunks


def test_openai_answers_conform_plain_and_streamed(client, openai_server):
    openai_server.script(ok("Paris."), ok("Paris."))
    assert plain(client, OPENAI_MODEL)["choices"][0]["message"]["content"] == "Paris."
    assert streamed(client, OPENAI_MODEL)[-1]["usage"]["completion_tokens"] == 1


def test_tool_calls_conform_plain_and_streamed(client, openai_server):
    openai_server.script(tool_call("weather", {"city": "Paris"}), tool_call("weather", {}))
    answer = plain(client, OPENAI_MODEL, tools=[WEATHER])
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "weather"
    streamed(client, OPENAI_MODEL, tools=[WEATHER])


def test_legacy_function_calls_conform_plain_and_streamed(client, openai_server):
    openai_server.script(tool_call("weather", {"city": "Paris"}), tool_call("weather", {}))
    functions = [WEATHER["function"]]
    answer = plain(client, OPENAI_MODEL, functions=functions)
    assert answer["choices"][0]["message"]["function_call"]["name"] == "weather"
    streamed(client, OPENAI_MODEL, functions=functions)


def test_custom_tool_calls_conform_plain_and_streamed(client, openai_server):
    """The spec's stream chunk knows only function tool calls: a custom tool call's delta
    (as OpenAI streams it, and as the gateway passes it on) is the one chunk not checked."""
    openai_server.script(ok(custom_call=("sql", "SELECT 1")), ok(custom_call=("sql", "SELECT 1")))
    answer = plain(client, OPENAI_MODEL, tools=[SQL], tool_choice="required")
    assert answer["choices"][0]["message"]["tool_calls"][0]["custom"]["input"] == "SELECT 1"
    body = {"model": OPENAI_MODEL, "messages": ASK, "stream": True, "tools": [SQL], **USAGE}
    chunks = sse_events(client.post("/chat/completions", json=body).text)
    custom = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    inputs = [
        d["custom"].get("input") for c in custom for d in c["choices"][0]["delta"]["tool_calls"]
    ]
    assert "".join(inputs) == "SELECT 1"
    for chunk in chunks:
        if chunk not in custom:
            check_answer("CreateChatCompletionStreamResponse", chunk)
    assert openai_server.requests[0].body["tools"] == [SQL]


def test_n_choices_logprobs_and_refusals_conform(client, openai_server):
    openai_server.script(ok("Paris."), ok("Paris."), ok(refusal="I can't help with that."))
    assert len(plain(client, OPENAI_MODEL, n=3, logprobs=True, top_logprobs=2)["choices"]) == 3
    chunks = streamed(client, OPENAI_MODEL, n=3, logprobs=True)
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1, 2}
    assert plain(client, OPENAI_MODEL)["choices"][0]["message"]["refusal"]


def test_answers_translated_from_anthropic_conform(client, anthropic_server):
    anthropic_server.script(ok("Paris."), ok("Paris."), tool_call("weather", {"city": "Paris"}))
    assert plain(client, ANTHROPIC_MODEL)["choices"][0]["message"]["refusal"] is None
    streamed(client, ANTHROPIC_MODEL)
    plain(client, ANTHROPIC_MODEL, tools=[WEATHER])


def test_simulated_answers_conform(client):
    assert plain(client, SIMULATED_MODEL)["choices"][0]["message"]["refusal"] is None
    streamed(client, SIMULATED_MODEL)


CACHED = {"X-Gateway-Cache-TTL": "60"}


def test_a_plain_cache_hit_of_a_streamed_answer_conforms_and_keeps_its_details(
    client, openai_server
):
    openai_server.script(ok("Paris.", reasoning_tokens=3))
    chunks = streamed(client, OPENAI_MODEL, CACHED, temperature=0, n=2, logprobs=True)
    hit = plain(client, OPENAI_MODEL, CACHED, temperature=0, n=2, logprobs=True)
    assert len(openai_server.requests) == 1
    assert len(hit["choices"]) == 2
    assert hit["choices"][0]["logprobs"]["content"]
    assert hit["service_tier"] == chunks[0]["service_tier"]
    assert hit["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


def test_a_streamed_cache_hit_of_a_plain_answer_conforms(client, openai_server):
    openai_server.script(ok("Paris."))
    answer = plain(client, OPENAI_MODEL, CACHED, temperature=0, n=2, logprobs=True)
    chunks = streamed(client, OPENAI_MODEL, CACHED, temperature=0, n=2, logprobs=True)
    assert len(openai_server.requests) == 1
    text = {i: "" for i in range(2)}
    for chunk in chunks:
        for choice in chunk["choices"]:
            text[choice["index"]] += choice["delta"].get("content") or ""
    assert text == {i: c["message"]["content"] for i, c in enumerate(answer["choices"])}


def test_the_model_list_conforms(client):
    response = client.get("/models")
    assert response.status_code == 200
    check_answer("ListModelsResponse", response.json())


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    check_answer("ErrorResponse", response.json())
    return response.json()["error"]


def test_errors_conform(client, openai_server, gateway_server):
    body = {"model": OPENAI_MODEL, "messages": ASK}
    assert error_of(client.post("/chat/completions", json={**body, "n": 0}), 400)["param"] == "n"
    unknown = client.post("/chat/completions", json={**body, "model": "nope"})
    assert error_of(unknown, 404)["param"] == "model"
    anthropic_n = client.post("/chat/completions", json={**body, "model": ANTHROPIC_MODEL, "n": 2})
    assert error_of(anthropic_n, 400)["param"] == "n"
    bad_key = client.post("/chat/completions", json=body, headers={"Authorization": "Bearer x"})
    error_of(bad_key, 401)
    openai_server.script(fail(400, message="Invalid 'messages'."))
    error_of(client.post("/chat/completions", json=body), 400)


def test_an_error_after_a_stream_began_conforms(client, openai_server):
    openai_server.script(stream_error(after=2))
    body = {"model": OPENAI_MODEL, "messages": ASK, "stream": True}
    text = client.post("/chat/completions", json=body).text
    events = [e for e in text.split("\n\n") if e.startswith("data: ")]
    assert "[DONE]" not in text
    for event in events[:-1]:
        check_answer("CreateChatCompletionStreamResponse", orjson.loads(event[6:]))
    check_answer("ErrorResponse", orjson.loads(events[-1][6:]))
