"""/v1/messages on an Anthropic-kind model: the client's own request is sent as it came,
and Claude's answer (JSON, or every stream event) comes back as Claude gave it. Fields chat
cannot carry are served by Claude only; another model refuses them by name.

The official `anthropic` SDK → the gateway → the loopback servers (their real wire formats).
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import pytest
from pydantic import BaseModel

from gateway.models import LanguageModel
from tests.factories import make_budget, set_fallbacks
from tests.inbound.conftest import drained, expected_cost
from tests.inbound.test_anthropic_sdk import HELLO, client
from tests.loopback import fail, ok

pytestmark = pytest.mark.django_db(transaction=True)
POLICY = "Refunds are paid within 30 days of a return."
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": POLICY},
    "title": "Refund policy",
    "citations": {"enabled": True},
}
ASK_DOCUMENT = [
    {"role": "user", "content": [DOCUMENT, {"type": "text", "text": "When are refunds paid?"}]}
]
BASH = {"type": "bash_20250124", "name": "bash"}


def test_claude_gets_the_clients_body_as_sent_with_its_beta_header(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world, **{"anthropic-beta": "token-efficient-tools-2025-02-19"})
    sent = {
        "model": "claude-sonnet",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": HELLO,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }
    raw = sdk.messages.with_raw_response.create(
        **sent, extra_body={"top_k": 5, "output_config": {"effort": "low"}}
    )
    (received,) = anthropic_server.requests
    assert received.body == {**sent, "top_k": 5, "output_config": {"effort": "low"}}
    assert received.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert (
        received.headers["x-api-key"] != world["secret"]
    )  # the provider's key, never the client's
    message = raw.parse()
    assert message.id == "msg_" + raw.headers["x-request-id"][4:]
    assert message.content[0].text == "Hello from the loopback server."
    cost = expected_cost("claude-sonnet", message.usage.input_tokens, message.usage.output_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
    (record,) = drained()
    assert (record.endpoint, record.status, record.cost_usd) == ("messages", "ok", cost)


@pytest.mark.parametrize("stream", [False, True])
def test_a_cited_document_answer_keeps_its_citations_and_costs_exact_tokens(
    gateway_server, world, anthropic_server, stream
):
    sdk = client(gateway_server, world)
    ask = {"model": "claude-sonnet", "max_tokens": 100, "messages": ASK_DOCUMENT}
    if stream:
        with sdk.messages.stream(**ask) as events:
            kinds = [event.type for event in events]
            message = events.get_final_message()
        assert kinds[-2:] == ["message_delta", "message_stop"]
    else:
        message = sdk.messages.create(**ask)
    (received,) = anthropic_server.requests
    assert received.body["messages"] == ASK_DOCUMENT  # the document as sent, not a translation
    citation = message.content[0].citations[0]
    assert (citation.type, citation.cited_text) == ("char_location", POLICY[:20])
    (record,) = drained()
    assert record.status == "ok" and record.stream is stream
    assert (record.input_tokens, record.output_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    assert record.cost_usd == expected_cost(
        "claude-sonnet", record.input_tokens, record.output_tokens
    )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"output_config": {"effort": "high"}}, "output_config.effort"),
        ({"tools": [BASH]}, "tools.0.type"),
        ({"messages": ASK_DOCUMENT}, "messages.0.content.0.type"),
    ],
)
def test_what_chat_cannot_carry_is_refused_by_an_openai_model_naming_it(
    gateway_server, world, openai_server, extra, param
):
    sdk = client(gateway_server, world)
    ask = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": HELLO}
    given = {k: v for k, v in extra.items() if k in ("tools", "messages")}
    rest = {k: v for k, v in extra.items() if k not in given}  # not in this SDK's signature
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(**{**ask, **given}, extra_body=rest)
    message = refused.value.body["error"]["message"]
    assert f"`{param}` cannot be served by model gpt-4o-mini (openai)" in message
    assert openai_server.requests == []
    (record,) = drained()
    assert (record.status, record.error_type) == ("error", "unsupported_parameter")


def test_a_beta_header_is_refused_by_an_openai_model_and_a_1m_context_beta_by_all(
    gateway_server, world, openai_server, anthropic_server
):
    beta = client(gateway_server, world, **{"anthropic-beta": "interleaved-thinking-2025-05-14"})
    with pytest.raises(anthropic.BadRequestError) as refused:
        beta.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HELLO)
    assert "`anthropic-beta` cannot be served" in refused.value.body["error"]["message"]
    long = client(gateway_server, world, **{"anthropic-beta": "context-1m-2025-08-07"})
    with pytest.raises(anthropic.BadRequestError) as refused:
        long.messages.create(model="claude-sonnet", max_tokens=10, messages=HELLO)
    assert "long-context rate" in refused.value.body["error"]["message"]
    assert openai_server.requests == anthropic_server.requests == []


def test_a_fallback_to_an_openai_model_is_translated_and_skipped_for_what_it_cannot_carry(
    gateway_server, world, openai_server, anthropic_server
):
    set_fallbacks(
        LanguageModel.objects.get(name="claude-sonnet"),
        LanguageModel.objects.get(name="gpt-4o-mini"),
    )
    anthropic_server.script(fail(529), fail(529))
    sdk = client(gateway_server, world)
    raw = sdk.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=50, system="Be brief.", messages=HELLO
    )
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert raw.parse().content[0].text == "Hello from the loopback server."
    assert openai_server.requests[0].body["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk.messages.create(
            model="claude-sonnet", max_tokens=50, messages=HELLO, extra_body={"top_k": 3}
        )
    assert "top_k" in failed.value.body["error"]["message"]
    assert len(openai_server.requests) == 1  # the second request was never translated


def test_a_pdf_holds_the_context_window_so_a_hard_budget_is_never_overspent(
    gateway_server, world, anthropic_server
):
    # A PDF's tokens follow no byte count (each page is also read as an image): its hold
    # is the model's context window, 128,000 tokens x $3/M = $0.384, past this budget.
    make_budget(world["team"], daily_limit_usd="0.10", hard=True)
    sdk = client(gateway_server, world)
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
    }
    question = {"type": "text", "text": "Summarise it."}
    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk.messages.create(
            model="claude-sonnet",
            max_tokens=50,
            messages=[{"role": "user", "content": [pdf, question]}],
        )
    assert "budget" in refused.value.body["error"]["message"].lower()
    assert anthropic_server.requests == []
    answer = sdk.messages.create(model="claude-sonnet", max_tokens=50, messages=ASK_DOCUMENT)
    assert answer.content[0].citations
    assert [r.status for r in drained()] == ["refused", "ok"]


def test_a_pdf_for_a_chain_without_claude_is_refused_for_what_it_is_not_for_its_budget(
    gateway_server, world, openai_server
):
    # The PDF's hold (a context window: with the output, about $0.024 on gpt-4o-mini) is
    # past this budget. No model of the chain could read it anyway: the client is told
    # that, before any hold is taken, not that its budget is short.
    make_budget(world["team"], daily_limit_usd="0.01", hard=True)
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
    }
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(gateway_server, world).messages.create(
            model="gpt-4o-mini",
            max_tokens=50,
            messages=[{"role": "user", "content": [pdf, {"type": "text", "text": "Sum up."}]}],
        )
    message = refused.value.body["error"]["message"]
    assert "`messages.0.content.0.type` cannot be served by model gpt-4o-mini" in message
    assert openai_server.requests == []
    assert [(r.status, r.http_status) for r in drained()] == [("error", 400)]


def test_a_plain_answer_is_cached_and_one_with_native_only_fields_is_not(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world, **{"X-Gateway-Cache-TTL": "60"})
    ask = {"model": "claude-sonnet", "max_tokens": 50, "messages": HELLO}
    first = sdk.messages.with_raw_response.create(**ask)
    again = sdk.messages.with_raw_response.create(**ask)
    assert (first.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("miss", "hit")
    assert again.parse().content[0].text == first.parse().content[0].text
    for _ in range(2):
        sdk.messages.create(**ask, extra_body={"top_k": 3})
    assert len(anthropic_server.requests) == 3


def test_a_stream_whose_usage_cannot_be_billed_ends_with_an_error_not_message_stop(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(ok(prompt_tokens=10**9))  # beyond the context window: not billable
    sdk = client(gateway_server, world)
    kinds: list[str] = []
    with pytest.raises(anthropic.APIStatusError):
        with sdk.messages.stream(model="claude-sonnet", max_tokens=50, messages=HELLO) as events:
            for event in events:
                kinds.append(event.type)
    assert "content_block_delta" in kinds  # the answer had begun: relayed as it came
    assert "message_delta" not in kinds and "message_stop" not in kinds  # held, then dropped
    (record,) = drained()
    assert record.status == "stream_error"
    assert record.input_tokens < 10**9  # billed at the gateway's estimate


class City(BaseModel):
    city: str
    country: str


PARIS = '{"city": "Paris", "country": "France"}'


@pytest.mark.parametrize("model", ["claude-sonnet", "gpt-4o-mini"])
def test_messages_parse_sends_claude_its_own_output_config_and_openai_a_response_format(
    gateway_server, world, openai_server, anthropic_server, model
):
    for server in (openai_server, anthropic_server):
        server.script(ok(PARIS))
    sdk = client(gateway_server, world)
    ask = [{"role": "user", "content": "Where is the Eiffel tower?"}]
    parsed = sdk.messages.parse(model=model, max_tokens=50, messages=ask, output_format=City)
    assert parsed.parsed_output == City(city="Paris", country="France")
    if model == "claude-sonnet":
        (received,) = anthropic_server.requests
        assert received.body["output_config"]["format"]["type"] == "json_schema"
        assert "tools" not in received.body  # Claude's own structured output, no forced tool
    else:
        (received,) = openai_server.requests
        assert received.body["response_format"]["type"] == "json_schema"


def test_count_tokens_estimates_a_request_with_a_document_and_a_bash_tool(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world)
    counted = sdk.messages.count_tokens(
        model="claude-sonnet", messages=ASK_DOCUMENT, tools=[BASH], extra_body={"top_k": 3}
    )
    assert counted.input_tokens > 0
    assert anthropic_server.requests == [] and drained() == []
