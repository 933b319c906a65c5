"""Contract tests of the OpenAI adapter: MockTransport units, then the loopback server."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers import adapter_for
from gateway.providers.base import ProviderAdapter, ProviderError, StreamResult
from tests.loopback import cut, fail, garbage, ok, stall, stream_error
from tests.providers.support import (
    SECRET,
    adapter,
    chat,
    config,
    data,
    drain,
    recording,
    sent_json,
    sse_response,
    text_of,
)

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 8},
    },
}


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return data(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "upstream-model",
            "usage": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


USAGE_CHUNK = data(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
)
GOOD_STREAM = (
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    USAGE_CHUNK,
    b"data: [DONE]\n\n",
)


async def test_it_posts_the_body_with_the_upstream_model_and_the_bearer_key():
    seen: list[httpx.Request] = []
    await adapter("openai", recording(httpx.Response(200, json=COMPLETION), seen)).complete(
        chat(temperature=0.2, stream=False)
    )
    (request,) = seen
    assert str(request.url) == "https://upstream.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert sent_json(request) == {
        "model": "upstream-model",
        "messages": chat().messages,
        "temperature": 0.2,
    }


async def test_it_returns_the_openai_body_and_its_usage_with_cached_tokens():
    completion = await adapter("openai", lambda r: httpx.Response(200, json=COMPLETION)).complete(
        chat()
    )
    assert completion.body == COMPLETION
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (12, 3)
    assert completion.usage.cached_tokens == 8
    assert completion.usage.reported is True


async def test_it_streams_the_chunks_and_records_the_usage_only_chunk_without_yielding_it():
    seen: list[httpx.Request] = []
    chunks, result = await drain(
        adapter("openai", recording(sse_response(*GOOD_STREAM), seen)),
        chat(stream=True, stream_options={"include_usage": False}),
    )
    assert sent_json(seen[0])["stream"] is True
    assert sent_json(seen[0])["stream_options"] == {"include_usage": True}
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert all("usage" not in c for c in chunks)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 2)
    assert result.finish_reason == "stop"


async def test_a_stream_without_a_finish_reason_is_cut():
    frames = (chunk({"content": "Hel"}), b"data: [DONE]\n\n")
    with pytest.raises(ProviderError) as caught:
        await drain(adapter("openai", lambda r: sse_response(*frames)), chat())
    assert caught.value.kind == "stream_cut"


async def test_an_error_event_mid_stream_raises_a_provider_error():
    frames = (GOOD_STREAM[0], data({"error": {"message": "model crashed", "type": "server_error"}}))
    with pytest.raises(ProviderError) as caught:
        await drain(adapter("openai", lambda r: sse_response(*frames)), chat())
    assert caught.value.retryable is True
    assert "model crashed" in caught.value.message


async def test_it_makes_no_call_without_an_api_key():
    seen: list[httpx.Request] = []
    with pytest.raises(ProviderError) as caught:
        await adapter(
            "openai", recording(httpx.Response(200, json=COMPLETION), seen), api_key=""
        ).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "auth_error")
    assert seen == []


# Through the loopback server: real HTTP, real SSE framing, real error bodies.


def loopback(server, http: httpx.AsyncClient, **fields) -> ProviderAdapter:
    return adapter_for(config("openai", base_url=server.base_url, **fields), http)


async def test_it_completes_through_the_loopback_server(openai_server, http):
    openai_server.script(ok("Hi there", cached_tokens=1))
    completion = await loopback(openai_server, http).complete(chat())
    assert completion.body["choices"][0]["message"]["content"] == "Hi there"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (3, 2)
    assert completion.usage.cached_tokens == 1
    (request,) = openai_server.requests
    assert request.body["model"] == "upstream-model"
    assert request.headers["authorization"] == f"Bearer {SECRET}"


async def test_it_streams_through_the_loopback_server(openai_server, http):
    chunks, result = await drain(loopback(openai_server, http), chat(stream=True))
    assert text_of(chunks) == "Hello from the loopback server."
    assert (result.usage.input_tokens, result.usage.output_tokens, result.finish_reason) == (
        3,
        5,
        "stop",
    )


async def test_a_loopback_429_carries_retry_after_and_the_error_body(openai_server, http):
    openai_server.script(fail(429, retry_after=7, message="Rate limit reached"))
    with pytest.raises(ProviderError) as caught:
        await loopback(openai_server, http).complete(chat())
    assert (caught.value.retryable, caught.value.retry_after) == (True, 7.0)
    assert caught.value.body["error"]["code"] == "rate_limit_exceeded"


async def test_a_loopback_html_page_is_a_retryable_bad_response(openai_server, http):
    openai_server.script(garbage())
    with pytest.raises(ProviderError) as caught:
        await loopback(openai_server, http).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "bad_response")


@pytest.mark.parametrize("abort", [True, False])
async def test_a_loopback_stream_cut_in_the_middle_raises_stream_cut(openai_server, http, abort):
    openai_server.script(cut(after=3, abort=abort))
    chunks: list[dict] = []
    result = StreamResult()
    with pytest.raises(ProviderError) as caught:
        async for c in loopback(openai_server, http).stream(chat(), result):
            chunks.append(c)
    assert len(chunks) == 3
    assert caught.value.kind == "stream_cut"
    assert result.usage is None


async def test_a_stalled_loopback_stream_times_out(openai_server, http):
    openai_server.script(stall(after=2))
    with pytest.raises(ProviderError) as caught:
        await drain(loopback(openai_server, http, read_timeout=0.2), chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "timeout")


async def test_a_loopback_error_event_mid_stream_raises(openai_server, http):
    openai_server.script(stream_error(after=2, message="upstream blew up"))
    with pytest.raises(ProviderError) as caught:
        await drain(loopback(openai_server, http), chat())
    assert "upstream blew up" in caught.value.message
