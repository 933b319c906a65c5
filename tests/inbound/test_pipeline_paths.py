"""The inbound formats take every path of the chat pipeline: the cache (a JSON answer
replayed as a stream), fallback, a stream cut after its first byte, and the same budget
refusal as chat, each answered in the endpoint's own format."""

from __future__ import annotations

import anthropic
import openai
import pytest

from gateway.models import LanguageModel
from tests.factories import make_budget, set_fallbacks
from tests.inbound.conftest import drained
from tests.loopback import fail, stream_error

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]


def claude_client(server, world, **headers) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url.removesuffix("/v1"),
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", **headers},
    )


def openai_client(server, world, **headers) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "agent", **headers},
    )


def test_a_cached_message_replays_as_an_anthropic_stream(gateway_server, world, openai_server):
    sdk = claude_client(gateway_server, world)
    first = sdk.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=HELLO
    )
    with sdk.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=HELLO) as stream:
        replayed = stream.get_final_message()
    assert first.headers["x-gateway-cache"] == "miss"
    assert replayed.content[0].text == first.parse().content[0].text
    assert len(openai_server.requests) == 1
    miss, hit = drained()
    assert hit.cache == "hit" and hit.cost_usd == 0 and hit.saved_usd == miss.cost_usd


def test_a_cached_response_replays_as_a_responses_stream(gateway_server, world, openai_server):
    sdk = openai_client(gateway_server, world)
    first = sdk.responses.create(model="gpt-4o-mini", input="Say hello, please")
    with sdk.responses.stream(model="gpt-4o-mini", input="Say hello, please") as stream:
        replayed = stream.get_final_response()
    assert replayed.output_text == first.output_text
    assert len(openai_server.requests) == 1
    assert [r.cache for r in drained()] == ["miss", "hit"]


def test_a_claude_format_request_falls_back_from_gpt_to_claude(
    gateway_server, world, openai_server, anthropic_server
):
    set_fallbacks(
        LanguageModel.objects.get(name="gpt-4o-mini"),
        LanguageModel.objects.get(name="claude-sonnet"),
    )
    openai_server.script(fail(503))
    sdk = claude_client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    raw = sdk.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=50, messages=HELLO)
    assert raw.headers["x-gateway-model"] == "claude-sonnet"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert raw.parse().content[0].text
    (record,) = drained()
    assert record.served_model == "claude-sonnet" and record.attempts == 2


def test_a_stream_cut_after_its_start_ends_with_anthropics_error_event(
    gateway_server, world, openai_server
):
    openai_server.script(stream_error(after=2))
    sdk = claude_client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    with pytest.raises(anthropic.APIStatusError) as failed:
        with sdk.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=HELLO) as stream:
            for _ in stream:
                pass
    assert "The answer is incomplete" in str(failed.value)
    (record,) = drained()
    assert record.status == "stream_error"


def test_a_stream_cut_after_its_start_ends_with_response_failed(
    gateway_server, world, openai_server
):
    openai_server.script(stream_error(after=2))
    sdk = openai_client(gateway_server, world, **{"X-Gateway-Cache-TTL": "0"})
    with sdk.responses.stream(model="gpt-4o-mini", input="Say hello, please") as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    (record,) = drained()
    assert record.status == "stream_error"


def test_a_budget_refusal_is_a_429_in_each_format(gateway_server, world):
    make_budget(world["team"], daily_limit_usd="0.000001", hard=True)
    claude = claude_client(gateway_server, world)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="claude-sonnet", max_tokens=1000, messages=HELLO)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    sdk = openai_client(gateway_server, world)
    with pytest.raises(openai.RateLimitError) as also:
        sdk.responses.create(model="claude-sonnet", input="Hi", max_output_tokens=1000)
    assert also.value.body["code"] == "budget_exceeded"
    assert [r.status for r in drained()] == ["refused", "refused"]
