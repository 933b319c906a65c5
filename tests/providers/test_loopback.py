"""The loopback servers are faithful enough for the official `openai` SDK to parse them."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.loopback import cut, fail, ok, slow, tool_call

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def sdk(openai_server):
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="sk-x", max_retries=0
    ) as client:
        yield client


async def test_the_sdk_parses_a_completion_with_usage(sdk, openai_server):
    openai_server.script(ok("Hi there", cached_tokens=1))
    answer = await sdk.chat.completions.create(model="gpt-test", messages=HELLO)
    assert answer.choices[0].message.content == "Hi there"
    assert answer.model == "gpt-test"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 2)
    assert answer.usage.prompt_tokens_details.cached_tokens == 1


async def test_the_sdk_parses_a_stream_with_the_usage_chunk(sdk):
    stream = await sdk.chat.completions.create(
        model="gpt-test", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Hello from the loopback server."
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5


async def test_the_sdk_parses_a_streamed_tool_call(sdk, openai_server):
    openai_server.script(tool_call("weather", {"city": "Paris"}))
    stream = await sdk.chat.completions.create(model="gpt-test", messages=HELLO, stream=True)
    calls = [
        c.choices[0].delta.tool_calls[0]
        async for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0].function.name == "weather"
    assert "".join(c.function.arguments for c in calls) == '{"city":"Paris"}'


async def test_the_sdk_sees_a_429_with_the_error_envelope_and_retry_after(sdk, openai_server):
    openai_server.script(fail(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(model="gpt-test", messages=HELLO)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "3"


async def test_the_sdk_sees_a_dropped_stream_as_an_error(sdk, openai_server):
    openai_server.script(cut(after=2))
    stream = await sdk.chat.completions.create(model="gpt-test", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError):
        [c async for c in stream]


async def test_a_slow_answer_makes_the_sdk_time_out(openai_server):
    openai_server.script(slow(1.0))
    async with openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="sk-x", max_retries=0, timeout=0.2
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gpt-test", messages=HELLO)


def test_the_servers_record_requests_and_use_the_script_in_order(openai_server):
    openai_server.script(fail(500), ok("second"))
    with openai.OpenAI(base_url=openai_server.base_url, api_key="sk-x", max_retries=1) as client:
        answer = client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert answer.choices[0].message.content == "second"
    assert [r.path for r in openai_server.requests] == ["/v1/chat/completions"] * 2
    assert openai_server.requests[0].body == {"model": "gpt-test", "messages": HELLO}


def test_the_anthropic_server_rejects_a_request_without_max_tokens_like_anthropic(anthropic_server):
    answer = httpx.post(
        anthropic_server.url + "/v1/messages",
        headers={"anthropic-version": "2023-06-01"},
        json={"model": "claude-x", "messages": HELLO},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
