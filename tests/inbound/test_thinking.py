"""Extended thinking end to end: the official `anthropic` SDK asks a Claude model to think,
through the gateway, against the loopback Anthropic server (which thinks as Claude does: a
signed thinking block before its answer). The thinking block comes back whole, plain and
streamed (thinking_delta, signature_delta), goes back upstream whole in the next turn of a
tool loop, and survives the response cache. An OpenAI-kind model refuses `thinking` with a
400 naming it, and never receives a past turn's signed blocks."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

from tests.inbound.conftest import drained, expected_cost
from tests.inbound.test_anthropic_sdk import HELLO, WEATHER, client
from tests.loopback import ok, tool_call
from tests.loopback_anthropic import SIGNATURE, THOUGHT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]
THINK = {"type": "enabled", "budget_tokens": 1024}


def chat_client(server, world) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", "X-Gateway-Cache-TTL": "0"},
    )


def test_claude_thinks_and_the_signed_block_comes_back_whole(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world)
    raw = sdk.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=2048, thinking=THINK, messages=HELLO
    )
    message = raw.parse()
    assert anthropic_server.requests[-1].body["thinking"] == THINK
    thought, text = message.content
    assert (thought.type, thought.thinking, thought.signature) == ("thinking", THOUGHT, SIGNATURE)
    assert text.text == "Hello from the loopback server."
    cost = expected_cost("claude-sonnet", message.usage.input_tokens, message.usage.output_tokens)
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost
    (record,) = drained()
    assert record.status == "ok" and record.cost_usd == cost


def test_a_streamed_thought_arrives_as_thinking_and_signature_deltas(
    gateway_server, world, anthropic_server
):
    sdk = client(gateway_server, world)
    with sdk.messages.stream(
        model="claude-sonnet", max_tokens=2048, thinking=THINK, messages=HELLO
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas
    assert deltas.index("signature_delta") < deltas.index("text_delta")
    thought, text = final.content
    assert (thought.thinking, thought.signature) == (THOUGHT, SIGNATURE)
    assert text.text == "Hello from the loopback server."
    (record,) = drained()
    assert record.stream is True and record.status == "ok"


def test_a_tool_loop_sends_the_signed_thought_back_to_claude(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(tool_call("get_weather", {"city": "Oslo"}), ok("Rainy."))
    sdk = client(gateway_server, world)
    first = sdk.messages.create(
        model="claude-sonnet",
        max_tokens=2048,
        thinking=THINK,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    )
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    use = first.content[1]
    second = sdk.messages.create(
        model="claude-sonnet",
        max_tokens=2048,
        thinking=THINK,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}],
            },
        ],
    )
    assert second.content[-1].text == "Rainy."
    turn = anthropic_server.requests[-1].body["messages"][1]
    assert turn["content"][0] == {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE}
    assert turn["content"][1]["type"] == "tool_use" and turn["content"][1]["id"] == use.id


def test_an_openai_kind_model_refuses_thinking_and_never_gets_signed_blocks(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="gpt-4o-mini", max_tokens=2048, thinking=THINK, messages=HELLO)
    assert "`thinking`" in refused.value.body["error"]["message"]
    assert openai_server.requests == []
    # A history that thought on Claude, continued on gpt-4o-mini without thinking: the
    # turn's text goes, its signed block (only Claude can read it) does not.
    history = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE},
                {"type": "text", "text": "Hello."},
            ],
        },
        {"role": "user", "content": "And now?"},
    ]
    sdk.messages.create(model="gpt-4o-mini", max_tokens=100, messages=history)
    sent = openai_server.requests[-1].body
    assert sent["messages"][1] == {"role": "assistant", "content": "Hello."}


def test_a_cached_thought_is_replayed_whole_in_a_stream(gateway_server, world, anthropic_server):
    sdk = client(gateway_server, world, **{"X-Gateway-Cache-TTL": "600"})
    ask = {"model": "claude-sonnet", "max_tokens": 2048, "thinking": THINK, "messages": HELLO}
    sdk.messages.create(**ask, extra_body={"temperature": 0})
    with sdk.messages.stream(**ask, extra_body={"temperature": 0}) as stream:
        final = stream.get_final_message()
    assert len(anthropic_server.requests) == 1  # the second answer came from the cache
    thought, text = final.content
    assert (thought.thinking, thought.signature) == (THOUGHT, SIGNATURE)
    assert [r.cache for r in drained()] == ["miss", "hit"]


def test_the_openai_sdk_gets_the_reasoning_and_the_signed_blocks(
    gateway_server, world, anthropic_server
):
    sdk = chat_client(gateway_server, world)
    answer = sdk.chat.completions.create(
        model="claude-sonnet",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"thinking": THINK},
    )
    message = answer.choices[0].message.model_dump()
    assert message["reasoning_content"] == THOUGHT
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE}
    ]
    assert message["content"] == "Hello from the loopback server."
    chunks = list(
        sdk.chat.completions.create(
            model="claude-sonnet",
            max_tokens=2048,
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"thinking": THINK},
            stream=True,
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_dump().get("reasoning_content") or "")
        for c in chunks
        if c.choices
    )
    assert reasoning == THOUGHT


@pytest.mark.parametrize("model", ["claude-sonnet", "gpt-4o-mini"])
@pytest.mark.parametrize("thinking", ["yes", 7, ["enabled"]])
def test_a_thinking_that_is_not_an_object_is_a_400_on_chat(
    gateway_server, world, anthropic_server, openai_server, model, thinking
):
    sdk = chat_client(gateway_server, world)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"thinking": thinking},
        )
    assert "`thinking`" in refused.value.message
    assert anthropic_server.requests == [] and openai_server.requests == []


def test_a_malformed_thinking_block_in_chat_history_is_a_400_not_a_500(gateway_server, world):
    sdk = chat_client(gateway_server, world)
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.", "thinking_blocks": ["not a block"]},
        {"role": "user", "content": "More?"},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="claude-sonnet", messages=history)
    assert "thinking block" in refused.value.message
