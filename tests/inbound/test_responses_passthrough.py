"""/v1/responses on an OpenAI-kind model: the client's own request is sent to OpenAI's
/v1/responses as it came (with `store: false`), and OpenAI's answer (JSON, or every stream
event) comes back as OpenAI gave it. What chat cannot carry is served by OpenAI-kind models
only; another model refuses it by name.

The official `openai` SDK → the gateway → the loopback servers (their real wire formats).
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.inbound.conftest import drained, expected_cost
from tests.inbound.test_responses_sdk import client
from tests.loopback import ok, stream_error
from tests.loopback_responses import ENCRYPTED

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "Say hello, please"}]


def test_reasoning_items_round_trip_with_their_encrypted_content(
    gateway_server, world, openai_server
):
    openai_server.script(ok(reasoning_tokens=12), ok("Hello again."))
    sdk = client(gateway_server, world)
    asked = {
        "model": "gpt-4o-mini",
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }
    raw = sdk.responses.with_raw_response.create(input=ASK, **asked)
    first = raw.parse()
    assert first.id == "resp_" + raw.headers["x-request-id"][4:]
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content == ENCRYPTED
    assert first.usage.output_tokens_details.reasoning_tokens == 12
    cost = expected_cost("gpt-4o-mini", first.usage.input_tokens, first.usage.output_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
    history = [*ASK, *[item.model_dump(exclude_none=True) for item in first.output]]
    second = sdk.responses.create(input=[*history, {"role": "user", "content": "Again"}], **asked)
    assert second.output_text == "Hello again."
    sent = openai_server.requests[-1]
    assert sent.path == "/v1/responses" and sent.body["store"] is False
    assert sent.body["input"][1]["encrypted_content"] == ENCRYPTED  # the item as it came
    rows = drained()
    assert [(r.endpoint, r.status) for r in rows] == [("responses", "ok")] * 2
    assert rows[0].cost_usd == cost and rows[0].output_tokens == first.usage.output_tokens


def test_a_stream_relays_openais_own_events_and_costs_exact_tokens(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world)
    with sdk.responses.stream(model="gpt-4o-mini", input=ASK) as events:
        seen = [event for event in events]
        final = events.get_final_response()
    kinds = [event.type for event in seen]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in seen] == list(range(len(seen)))  # OpenAI's numbering
    assert final.output_text == "Hello from the loopback server."
    (record,) = drained()
    assert record.stream is True and record.status == "ok"
    assert (record.input_tokens, record.output_tokens) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert record.cost_usd == expected_cost("gpt-4o-mini", record.input_tokens, 5)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        (
            {"input": [*ASK, {"type": "reasoning", "id": "rs_1", "summary": []}]},
            "input[1].type",
        ),
    ],
)
def test_what_chat_cannot_carry_is_refused_by_a_claude_model_naming_it(
    gateway_server, world, anthropic_server, extra, param
):
    sdk = client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(**{"model": "claude-sonnet", "input": ASK, **extra})
    error = refused.value.body
    assert f"`{param}` cannot be served by model claude-sonnet (anthropic)" in error["message"]
    assert error["code"] == "unsupported_parameter"
    assert anthropic_server.requests == []


@pytest.mark.parametrize("scenario", ["upstream error", "usage not billable"])
def test_a_stream_that_fails_ends_with_response_failed_never_completed(
    gateway_server, world, openai_server, scenario
):
    if scenario == "upstream error":
        openai_server.script(stream_error(after=6))
    else:  # beyond the model's context window: the gateway cannot bill it
        openai_server.script(ok(prompt_tokens=10**9))
    sdk = client(gateway_server, world)
    kinds: list[str] = []
    with sdk.responses.stream(model="gpt-4o-mini", input=ASK) as events:
        for event in events:
            kinds.append(event.type)
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    (record,) = drained()
    assert record.status == "stream_error"
    assert record.input_tokens < 10**9  # billed at the gateway's estimate


def test_a_plain_answer_is_cached_and_one_asking_for_more_is_not(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world).with_options(
        default_headers={"X-Gateway-Feature": "agent", "X-Gateway-Cache-TTL": "60"}
    )
    first = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input=ASK)
    again = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input=ASK)
    assert (first.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("miss", "hit")
    assert again.parse().output_text == first.parse().output_text
    for _ in range(2):
        sdk.responses.create(model="gpt-4o-mini", input=ASK, top_logprobs=2)
    assert len(openai_server.requests) == 3
