"""Output caps on the user's path: the official `openai` SDK → the gateway on a loopback port
→ loopback servers speaking OpenAI's and Anthropic's wire formats.

A request that sends no max_tokens is capped: the cap goes upstream under each provider's
name for it, the answer says so (X-Gateway-Output-Cap), and an answer that reaches it ends
with finish_reason "length", plain or streamed. A request's own max_tokens, or a strict
budget, turns the cap off.
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from budgets.models import Budget
from gateway import ledger
from gateway.models import Feature, UsageRecord
from gateway.snapshot import store
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.loopback import fail, ok

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]
NO_CACHE = {"X-Gateway-Cache-TTL": "0"}


@pytest.fixture
def world(openai_server, anthropic_server, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant")
    team = make_team("acme")
    feature = make_feature(team, "chatbot", output_cap=300)
    key, secret = make_key(team, feature)
    oa = make_provider(
        "openai", kind="openai", base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY", options={},
    )  # fmt: skip
    an = make_provider(
        "anthropic", kind="anthropic", base_url=anthropic_server.base_url,
        api_key_env="TEST_ANTHROPIC_API_KEY", options={},
    )  # fmt: skip
    local = make_provider(
        "vllm", kind="openai_compatible", base_url=openai_server.base_url, options={}
    )
    gpt = make_model("gpt-4o-mini", oa, input_price="0.15", output_price="0.6",
                     max_output_tokens=16384)  # fmt: skip
    claude = make_model("claude-haiku", an, input_price="0.8", output_price="4",
                        max_output_tokens=250)  # fmt: skip
    make_model("llama", local, input_price="0", output_price="0", max_output_tokens=8192)
    set_fallbacks(gpt, claude)
    store().invalidate()
    return {"team": team, "feature": feature, "key": key, "secret": secret}


def sdk(server, world) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=world["secret"], max_retries=0, default_headers=NO_CACHE
    )


def drained() -> list[UsageRecord]:
    ledger.drain()
    return list(UsageRecord.objects.order_by("created_at"))


def test_the_feature_cap_is_sent_upstream_and_said_in_a_header(
    gateway_server, world, openai_server
):
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert raw.headers["x-gateway-output-cap"] == "300"
    sent = openai_server.requests[-1].body
    assert sent["max_completion_tokens"] == 300 and "max_tokens" not in sent
    assert [r.output_cap for r in drained()] == [300]


def test_an_answer_that_reaches_the_cap_ends_with_length_plain_and_streamed(
    gateway_server, world, openai_server
):
    openai_server.script(ok(finish="length"), ok(finish="length"))
    client = sdk(gateway_server, world)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert answer.choices[0].finish_reason == "length"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO, stream=True
    )
    assert raw.headers["x-gateway-output-cap"] == "300"
    chunks = list(raw.parse())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert [r.status for r in drained()] == ["ok", "ok"]


def test_anthropic_gets_the_cap_as_max_tokens_never_above_the_model_max(
    gateway_server, world, openai_server, anthropic_server
):
    # gpt-4o-mini fails, claude-haiku (max output 250, below the feature's 300) serves.
    openai_server.script(fail(503), fail(503))
    anthropic_server.script(ok(finish="length"), ok(finish="length"))
    client = sdk(gateway_server, world)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-gateway-model"] == "claude-haiku"
    assert raw.headers["x-gateway-output-cap"] == "250"
    assert raw.parse().choices[0].finish_reason == "length"
    assert openai_server.requests[0].body["max_completion_tokens"] == 300
    assert anthropic_server.requests[0].body["max_tokens"] == 250
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert anthropic_server.requests[1].body["max_tokens"] == 250


def test_a_self_hosted_server_gets_max_tokens(gateway_server, world, openai_server):
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="llama", messages=HELLO
    )
    assert raw.headers["x-gateway-output-cap"] == "300"
    sent = openai_server.requests[-1].body
    assert sent["max_tokens"] == 300 and "max_completion_tokens" not in sent


def test_a_key_cap_overrides_the_feature_cap(gateway_server, world, openai_server):
    world["key"].output_cap = 120
    world["key"].save()
    store().invalidate()
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert raw.headers["x-gateway-output-cap"] == "120"
    assert openai_server.requests[-1].body["max_completion_tokens"] == 120


def test_without_a_cap_set_the_learned_then_the_default_cap_applies(
    gateway_server, world, openai_server, settings
):
    feature = world["feature"]
    feature.output_cap = None
    feature.learned_output_cap = 1500
    feature.save()
    store().invalidate()
    client = sdk(gateway_server, world)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-gateway-output-cap"] == "1500"
    feature.learned_output_cap = None
    feature.save()
    store().invalidate()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raw.headers["x-gateway-output-cap"] == str(settings.GATEWAY["OUTPUT_CAP_DEFAULT"])


def test_the_clients_own_max_tokens_is_left_alone(gateway_server, world, openai_server):
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=5000
    )
    assert "x-gateway-output-cap" not in raw.headers
    sent = openai_server.requests[-1].body
    assert sent["max_tokens"] == 5000 and "max_completion_tokens" not in sent
    assert [r.output_cap for r in drained()] == [None]


def test_a_strict_budget_sends_no_cap(gateway_server, world, openai_server):
    make_budget(world["team"], daily_limit_usd="50", reservation=Budget.Reservation.STRICT)
    store().invalidate()
    raw = sdk(gateway_server, world).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO
    )
    assert "x-gateway-output-cap" not in raw.headers
    sent = openai_server.requests[-1].body
    assert "max_completion_tokens" not in sent and "max_tokens" not in sent


def test_the_cap_sizes_the_reservation(gateway_server, world, openai_server):
    """The chain's dearest output price is claude-haiku's $4/M. A 300-token cap holds about
    $0.0012, the chain's 16,384 tokens $0.066: $0.005 serves the capped request and refuses
    the strict one, and the refusal's record says what each figure was."""
    budget = make_budget(world["team"], daily_limit_usd="0.005", alert_thresholds=[])
    store().invalidate()
    client = sdk(gateway_server, world)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
    budget.reservation = Budget.Reservation.STRICT
    budget.save()
    store().invalidate()
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert "reserved by requests in flight" in refused.value.message
    served, record = drained()
    assert record.status == "refused" and record.http_status == 429
    assert record.refusal["output_tokens_held"] == 16384
    assert record.refusal["limit_usd"] == "0.005"
    assert record.refusal["spent_usd"] == format(served.cost_usd.normalize(), "f")
    assert record.refusal["reserved_usd"] == "0"
    assert Decimal(record.refusal["needed_usd"]) > Decimal("0.0655")
    assert f"needs up to ${record.refusal['needed_usd']}" in refused.value.message


def test_a_cached_answer_is_reused_only_under_the_same_cap(gateway_server, world, openai_server):
    client = openai.OpenAI(base_url=gateway_server.base_url, api_key=world["secret"], max_retries=0)
    openai_server.script(ok(finish="length"))
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    again = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert (first.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("miss", "hit")
    assert again.headers["x-gateway-output-cap"] == "300"
    assert again.parse().choices[0].finish_reason == "length"  # cut at the cap, and says so
    Feature.objects.filter(pk=world["feature"].pk).update(output_cap=4000)
    store().invalidate()
    raised = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
    assert raised.headers["x-gateway-cache"] == "miss"
    assert raised.headers["x-gateway-output-cap"] == "4000"
    assert len(openai_server.requests) == 2
