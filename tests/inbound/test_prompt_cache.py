"""Prompt caching end to end: the official `anthropic` SDK and the `openai` SDK set
`cache_control` breakpoints; on a Claude model each reaches the loopback Anthropic server on
the block it was set on, and the cache write and read tokens come back in the client's usage,
in the cost header and in the ledger, each at its own price. On an OpenAI-kind model (which
caches prefixes on its own) the request goes without them and is answered."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

from tests.inbound.conftest import PRICES, drained
from tests.inbound.test_anthropic_sdk import WEATHER, client
from tests.loopback import ok

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]
EPHEMERAL = {"type": "ephemeral"}
RULES = "You answer questions about the weather. " * 50


def exact_cost(model: str, *, plain: int, read: int, written: int, output: int) -> Decimal:
    """Tokens × prices per million: cache reads at a tenth, writes at 1.25× the input price
    (tests/inbound/conftest.py)."""
    price_in, price_out = PRICES[model]
    units = (
        plain * price_in
        + read * price_in / 10
        + written * price_in * Decimal("1.25")
        + output * price_out
    )
    return units / Decimal(1_000_000)


def cached_request(sdk: anthropic.Anthropic, model: str):
    return sdk.messages.with_raw_response.create(
        model=model,
        max_tokens=100,
        system=[{"type": "text", "text": RULES, "cache_control": EPHEMERAL}],
        tools=[{**WEATHER, "cache_control": EPHEMERAL}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Rain in Oslo?", "cache_control": EPHEMERAL}],
            }
        ],
    )


def without_marks(value) -> bool:
    if isinstance(value, dict):
        return "cache_control" not in value and all(without_marks(v) for v in value.values())
    if isinstance(value, list):
        return all(without_marks(v) for v in value)
    return True


def test_claude_gets_each_breakpoint_and_the_cache_write_is_billed_at_its_price(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(ok(cache_write_tokens=1200), ok(cached_tokens=1200))
    sdk = client(gateway_server, world)

    raw = cached_request(sdk, "claude-sonnet")

    sent = anthropic_server.requests[-1].body
    assert sent["system"] == [{"type": "text", "text": RULES, "cache_control": EPHEMERAL}]
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    assert sent["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    usage = raw.parse().usage
    assert usage.cache_creation_input_tokens == 1200 and usage.cache_read_input_tokens == 0
    cost = exact_cost(
        "claude-sonnet",
        plain=usage.input_tokens,
        read=0,
        written=1200,
        output=usage.output_tokens,
    )
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost

    # The same prefix again: now a cache read, at a tenth of the input price.
    again = cached_request(sdk, "claude-sonnet")
    reread = again.parse().usage
    assert reread.cache_read_input_tokens == 1200 and reread.cache_creation_input_tokens == 0
    second = exact_cost(
        "claude-sonnet",
        plain=reread.input_tokens,
        read=1200,
        written=0,
        output=reread.output_tokens,
    )
    assert Decimal(again.headers["x-gateway-cost-usd"]) == second < cost

    first, then = drained()
    assert (first.cache_write_tokens, first.cached_tokens) == (1200, 0)
    assert first.input_tokens == usage.input_tokens + 1200
    assert (first.cost_usd, then.cost_usd) == (cost, second)
    assert (then.cache_write_tokens, then.cached_tokens) == (0, 1200)


def test_a_streamed_message_reports_the_cache_tokens_in_its_final_usage(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(ok(cache_write_tokens=800))
    sdk = client(gateway_server, world)
    with sdk.messages.stream(
        model="claude-sonnet",
        max_tokens=100,
        system=[{"type": "text", "text": RULES, "cache_control": EPHEMERAL}],
        messages=[{"role": "user", "content": "Rain in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    assert anthropic_server.requests[-1].body["system"][0]["cache_control"] == EPHEMERAL
    assert final.usage.cache_creation_input_tokens == 800
    (record,) = drained()
    assert record.cache_write_tokens == 800 and record.stream is True
    assert record.cost_usd == exact_cost(
        "claude-sonnet",
        plain=record.input_tokens - 800,
        read=0,
        written=800,
        output=record.output_tokens,
    )


def test_an_openai_kind_model_gets_the_request_without_breakpoints(
    gateway_server, world, openai_server
):
    sdk = client(gateway_server, world)
    message = cached_request(sdk, "gpt-4o-mini").parse()
    assert message.content[0].text == "Hello from the loopback server."
    sent = openai_server.requests[-1].body
    assert without_marks(sent)
    assert sent["messages"][0]["content"] == [{"type": "text", "text": RULES}]
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_the_openai_sdk_sets_breakpoints_on_chat_parts_for_claude(
    gateway_server, world, anthropic_server
):
    anthropic_server.script(ok(cache_write_tokens=1000))
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", "X-Gateway-Cache-TTL": "0"},
    )
    raw = sdk.chat.completions.with_raw_response.create(
        model="claude-sonnet",
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": RULES, "cache_control": EPHEMERAL}],
            },
            {"role": "user", "content": "Rain in Oslo?", "cache_control": EPHEMERAL},
        ],
    )
    sent = anthropic_server.requests[-1].body
    assert sent["system"] == [{"type": "text", "text": RULES, "cache_control": EPHEMERAL}]
    assert sent["messages"][0]["content"][-1]["cache_control"] == EPHEMERAL
    usage = raw.parse().usage
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.prompt_tokens_details.model_dump()["cache_write_tokens"] == 1000
    (record,) = drained()
    assert record.cache_write_tokens == 1000
    assert (
        Decimal(raw.headers["x-gateway-cost-usd"])
        == record.cost_usd
        == exact_cost(
            "claude-sonnet",
            plain=usage.prompt_tokens - 1000,
            read=0,
            written=1000,
            output=usage.completion_tokens,
        )
    )
