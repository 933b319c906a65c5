"""n > 1 and custom tools, end to end (issue 25): the official `openai` SDK → the gateway →
loopback OpenAI, OpenAI-compatible and Anthropic servers on their real wire formats."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import (
    make_budget,
    make_key,
    make_loopback_providers,
    make_model,
    make_provider,
    make_team,
)
from tests.loopback import ok

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "Name a colour."}]
SQL = {"type": "custom", "custom": {"name": "sql", "description": "Runs one SQL query."}}


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    team = make_team("acme")
    _, secret = make_key(team)
    oa, an = make_loopback_providers(openai_server, anthropic_server, monkeypatch)
    local = make_provider("vllm", kind="openai_compatible", base_url=openai_server.base_url)
    make_model("gpt-4o", oa, input_price="1", output_price="2", max_output_tokens=1000)
    make_model("llama", local, input_price="1", output_price="2")
    make_model("claude", an)
    return {"team": team, "secret": secret}


def sdk(gateway_server, world) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.base_url, api_key=world["secret"], max_retries=0)


def record() -> UsageRecord:
    ledger.drain()
    return UsageRecord.objects.get()


@pytest.mark.parametrize("model", ["gpt-4o", "llama"])
def test_n_choices_are_served_and_priced_from_the_usage_of_all(
    gateway_server, world, openai_server, model
):
    openai_server.script(ok("Red is a colour."))  # 4 pieces: 4 completion tokens a choice
    answer = sdk(gateway_server, world).chat.completions.create(model=model, messages=ASK, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert answer.usage.completion_tokens == 12
    row = record()
    assert row.output_tokens == 12
    assert row.cost_usd == (Decimal(row.input_tokens) * 1 + 12 * 2) / 1_000_000


def test_n_choices_stream_every_choice(gateway_server, world, openai_server):
    openai_server.script(ok("Red is a colour."))
    stream = sdk(gateway_server, world).chat.completions.create(
        model="gpt-4o", messages=ASK, n=2, stream=True, stream_options={"include_usage": True}
    )
    text = {0: "", 1: ""}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert text == {0: "Red is a colour.", 1: "Red is a colour."}
    assert usage.completion_tokens == 8
    assert record().output_tokens == 8


def test_the_worst_case_of_every_choice_is_reserved(gateway_server, world):
    # 1000 output tokens at $2/M: $0.002 a choice. Three choices' worst case is over $0.005.
    make_budget(world["team"], daily_limit_usd="0.005", hard=True)
    client = sdk(gateway_server, world)
    client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=1000, n=2)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=1000, n=3)


def test_a_provider_that_cannot_serve_n_choices_is_a_400_naming_n(gateway_server, world):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway_server, world).chat.completions.create(model="claude", messages=ASK, n=2)
    assert info.value.body["param"] == "n"
    assert "claude" in info.value.body["message"]


def test_max_tokens_beyond_the_models_limit_is_a_400_naming_it(gateway_server, world):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway_server, world).chat.completions.create(
            model="gpt-4o", messages=ASK, max_completion_tokens=1001
        )
    assert info.value.body["param"] == "max_completion_tokens"
    assert "1000" in info.value.body["message"]


def test_custom_tools_reach_openai_and_its_call_comes_back(gateway_server, world, openai_server):
    openai_server.script(ok(custom_call=("sql", "SELECT 1")))
    answer = sdk(gateway_server, world).chat.completions.create(
        model="gpt-4o", messages=ASK, tools=[SQL]
    )
    call = answer.choices[0].message.tool_calls[0]
    assert (call.type, call.custom.name, call.custom.input) == ("custom", "sql", "SELECT 1")
    assert openai_server.requests[0].body["tools"] == [SQL]


def test_custom_tools_are_a_400_where_the_provider_cannot_take_them(
    gateway_server, world, anthropic_server
):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway_server, world).chat.completions.create(
            model="claude", messages=ASK, tools=[SQL]
        )
    assert info.value.body["param"] == "tools"
    assert anthropic_server.requests == []
