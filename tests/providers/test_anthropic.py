"""Contract tests of the Anthropic adapter: HTTP, streams, errors, the loopback server."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers import adapter_for
from gateway.providers.base import ProviderAdapter, ProviderError
from tests.loopback import cut, fail, ok, stream_error, tool_call
from tests.providers.support import ANTHROPIC_MESSAGE as MESSAGE
from tests.providers.support import (
    SECRET,
    adapter,
    chat,
    config,
    drain,
    event,
    recording,
    sent_json,
    sse_response,
    text_of,
)


async def test_it_posts_to_v1_messages_with_the_key_and_version_headers():
    seen: list[httpx.Request] = []
    handler = recording(httpx.Response(200, json=MESSAGE), seen)
    await adapter("anthropic", handler, base_url="https://api.anthropic.test").complete(chat())
    await adapter("anthropic", handler, base_url="https://api.anthropic.test/v1/").complete(chat())
    assert [str(r.url) for r in seen] == ["https://api.anthropic.test/v1/messages"] * 2
    assert seen[0].headers["x-api-key"] == SECRET
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen[0].headers


# Streams

START = {
    "type": "message_start",
    "message": {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 1,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 0,
        },
    },
}
TEXT_STREAM = (
    event(START),
    event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ),
    event({"type": "ping"}),
    event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
    ),
    event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}
    ),
    event({"type": "content_block_stop", "index": 0}),
    event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 6},
        }
    ),
    event({"type": "message_stop"}),
)


async def test_a_text_stream_becomes_openai_chunks_with_usage():
    seen: list[httpx.Request] = []
    chunks, result = await drain(
        adapter("anthropic", recording(sse_response(*TEXT_STREAM), seen)), chat()
    )
    assert sent_json(seen[0])["stream"] is True
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {(c["id"], c["object"], c["model"]) for c in chunks} == {
        ("msg_2", "chat.completion.chunk", "claude-x")
    }
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_tokens) == (
        14,
        6,
        4,
    )
    assert result.finish_reason == "stop"


async def test_a_tool_use_stream_becomes_openai_tool_call_deltas():
    frames = (
        event(START),
        event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "weather",
                    "input": {},
                },
            }
        ),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"city"'},
            }
        ),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ': "Rome"}'},
            }
        ),
        event({"type": "content_block_stop", "index": 0}),
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            }
        ),
        event({"type": "message_stop"}),
    )
    chunks, result = await drain(adapter("anthropic", lambda r: sse_response(*frames)), chat())
    assert [c["choices"][0]["delta"].get("tool_calls") for c in chunks[1:-1]] == [
        [
            {
                "index": 0,
                "id": "toolu_9",
                "type": "function",
                "function": {"name": "weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"city"'}}],
        [{"index": 0, "function": {"arguments": ': "Rome"}'}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert result.finish_reason == "tool_calls"


async def test_an_overloaded_error_event_mid_stream_is_retryable():
    frames = (
        event(START),
        event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    with pytest.raises(ProviderError) as caught:
        await drain(adapter("anthropic", lambda r: sse_response(*frames)), chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "overloaded")
    assert caught.value.body["error"]["type"] == "overloaded_error"


# Errors


# Through the loopback server


def loopback(server, http: httpx.AsyncClient) -> ProviderAdapter:
    return adapter_for(config("anthropic", base_url=server.base_url), http)


async def test_it_completes_through_the_loopback_server(anthropic_server, http):
    anthropic_server.script(ok("Hi there", cached_tokens=50, cache_write_tokens=5))
    request = chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    )
    completion = await loopback(anthropic_server, http).complete(request)
    assert completion.body["choices"][0]["message"]["content"] == "Hi there"
    assert (
        completion.usage.input_tokens,
        completion.usage.cached_tokens,
        completion.usage.cache_write_tokens,
    ) == (59, 50, 5)
    (sent,) = anthropic_server.requests
    assert sent.body["system"] == "Be brief."
    assert sent.body["max_tokens"] == 4096


async def test_it_streams_a_tool_call_through_the_loopback_server(anthropic_server, http):
    anthropic_server.script(tool_call("weather", {"city": "Paris"}))
    chunks, result = await drain(loopback(anthropic_server, http), chat())
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["function"]["name"] == "weather"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert result.finish_reason == "tool_calls"


async def test_a_loopback_529_is_a_retryable_overload(anthropic_server, http):
    anthropic_server.script(fail(529))
    with pytest.raises(ProviderError) as caught:
        await loopback(anthropic_server, http).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "overloaded")
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_a_loopback_overloaded_event_mid_stream_is_retryable(anthropic_server, http):
    anthropic_server.script(stream_error(after=3))
    with pytest.raises(ProviderError) as caught:
        await drain(loopback(anthropic_server, http), chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "overloaded")


async def test_a_loopback_stream_cut_raises_stream_cut(anthropic_server, http):
    anthropic_server.script(cut(after=4), ok("Recovered"))
    with pytest.raises(ProviderError) as caught:
        await drain(loopback(anthropic_server, http), chat())
    assert caught.value.kind == "stream_cut"
    chunks, _ = await drain(loopback(anthropic_server, http), chat())
    assert text_of(chunks) == "Recovered"
