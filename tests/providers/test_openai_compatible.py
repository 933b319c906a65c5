"""Contract tests of the OpenAI-compatible adapter (vLLM, Ollama, llama.cpp): OpenAI's wire
format with an optional key and optional usage."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers import adapter_for
from gateway.providers.base import ProviderAdapter, ProviderError
from tests.loopback import cut, fail, garbage, ok
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

NO_USAGE = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "llama",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
}
STREAM_NO_USAGE = (
    data(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "Hi"}}],
        }
    ),
    data(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    ),
    b"data: [DONE]\n\n",
)


async def test_it_sends_no_authorization_header_without_a_key():
    seen: list[httpx.Request] = []
    handler = recording(httpx.Response(200, json=NO_USAGE), seen)
    await adapter(
        "openai_compatible", handler, api_key="", base_url="http://gpu-box:8000/v1"
    ).complete(chat())
    assert str(seen[0].url) == "http://gpu-box:8000/v1/chat/completions"
    assert "authorization" not in seen[0].headers


async def test_it_sends_the_key_when_one_is_configured():
    seen: list[httpx.Request] = []
    await adapter(
        "openai_compatible", recording(httpx.Response(200, json=NO_USAGE), seen)
    ).complete(chat())
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


async def test_an_answer_without_usage_is_marked_unreported():
    completion = await adapter(
        "openai_compatible", lambda r: httpx.Response(200, json=NO_USAGE)
    ).complete(chat())
    assert completion.body == NO_USAGE
    assert completion.usage.reported is False
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (0, 0)


async def test_a_stream_without_usage_leaves_the_result_usage_empty():
    chunks, result = await drain(
        adapter("openai_compatible", lambda r: sse_response(*STREAM_NO_USAGE)), chat()
    )
    assert text_of(chunks) == "Hi"
    assert result.usage is None
    assert result.finish_reason == "stop"


async def test_stream_usage_can_be_turned_off_for_servers_that_reject_stream_options():
    seen: list[httpx.Request] = []
    handler = recording(lambda: sse_response(*STREAM_NO_USAGE), seen)
    await drain(adapter("openai_compatible", handler, options={"stream_usage": False}), chat())
    await drain(adapter("openai_compatible", handler), chat())
    assert "stream_options" not in sent_json(seen[0])
    assert sent_json(seen[1])["stream_options"] == {"include_usage": True}


async def test_it_makes_no_call_without_a_base_url():
    seen: list[httpx.Request] = []
    with pytest.raises(ProviderError) as caught:
        await adapter(
            "openai_compatible", recording(httpx.Response(200, json=NO_USAGE), seen), base_url=""
        ).complete(chat())
    assert caught.value.retryable is True
    assert seen == []


async def test_a_404_is_not_retryable_and_keeps_the_servers_error_body():
    body = {"error": {"message": "model 'llama9' not found", "type": "invalid_request_error"}}
    with pytest.raises(ProviderError) as caught:
        await adapter("openai_compatible", lambda r: httpx.Response(404, json=body)).complete(
            chat()
        )
    assert (caught.value.retryable, caught.value.status) == (False, 404)
    assert caught.value.body == body


async def test_a_502_is_retryable():
    with pytest.raises(ProviderError) as caught:
        await adapter(
            "openai_compatible", lambda r: httpx.Response(502, text="Bad Gateway")
        ).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "server_error")
    assert "Bad Gateway" in caught.value.message


# Through the loopback server (it speaks OpenAI's format, like vLLM does)


def loopback(server, http: httpx.AsyncClient) -> ProviderAdapter:
    return adapter_for(config("openai_compatible", base_url=server.base_url, api_key=""), http)


async def test_it_streams_through_a_loopback_server_that_reports_no_usage(openai_server, http):
    openai_server.script(ok("Local model here", usage=False))
    chunks, result = await drain(loopback(openai_server, http), chat())
    assert text_of(chunks) == "Local model here"
    assert result.usage is None
    assert "authorization" not in openai_server.requests[0].headers


async def test_it_completes_through_a_loopback_server_that_reports_no_usage(openai_server, http):
    openai_server.script(ok("Local", usage=False))
    completion = await loopback(openai_server, http).complete(chat())
    assert completion.body["choices"][0]["message"]["content"] == "Local"
    assert completion.usage.reported is False


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [(fail(500), "server_error"), (garbage(), "bad_response"), (cut(after=2), "stream_cut")],
)
async def test_loopback_failures_are_retryable(openai_server, http, behaviour, kind):
    openai_server.script(behaviour)
    with pytest.raises(ProviderError) as caught:
        if behaviour.cut_after:
            await drain(loopback(openai_server, http), chat())
        else:
            await loopback(openai_server, http).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, kind)
