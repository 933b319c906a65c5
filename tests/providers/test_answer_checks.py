"""What every adapter checks in a provider's answer before the gateway bills or relays it
(issue 16): usage counts, the answer's shape, its size, and the error text it carries. The
attacks themselves, over HTTP against the served gateway, are in
tests/security/test_provider_attacks.py; these are the fast units of the same rules."""

from __future__ import annotations

import httpx
import orjson
import pytest

from gateway.providers.base import (
    ProviderError,
    Usage,
    check_chunk,
    check_completion,
    usage_problem,
)
from gateway.redaction import scrub_provider_text
from tests.providers.support import ANTHROPIC_MESSAGE, adapter, chat, data, drain, sse_response

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
}  # fmt: skip


def answer(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": -1}, {"prompt_tokens": "12"}, {"completion_tokens": 2.5},
     {"completion_tokens": True}, {"prompt_tokens": 10**15}, "lots",
     {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": -3}}],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
async def test_openai_usage_that_is_not_a_count_is_a_retryable_bad_response(kind, usage):
    provider = adapter(kind, lambda r: answer({**COMPLETION, "usage": usage}))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(chat())
    assert (caught.value.kind, caught.value.retryable) == ("bad_response", True)
    assert caught.value.public == "upstream sent a malformed answer"


async def test_a_whole_number_written_as_a_float_is_still_a_count():
    usage = {"prompt_tokens": 12.0, "completion_tokens": 3}
    provider = adapter("openai", lambda r: answer({**COMPLETION, "usage": usage}))
    assert (await provider.complete(chat())).usage.input_tokens == 12


@pytest.mark.parametrize("usage", [{"input_tokens": -1}, {"output_tokens": "7"},
                                   {"cache_read_input_tokens": 10**12}])  # fmt: skip
async def test_anthropic_usage_that_is_not_a_count_is_a_retryable_bad_response(usage):
    body = {**ANTHROPIC_MESSAGE, "usage": {"input_tokens": 1, "output_tokens": 1, **usage}}
    provider = adapter("anthropic", lambda r: answer(body), base_url="https://upstream.test")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(chat())
    assert caught.value.kind == "bad_response" and caught.value.retryable


def test_usage_beyond_the_models_window_plus_output_cannot_be_billed():
    assert usage_problem(Usage(input_tokens=8000, output_tokens=1000), 9000) is None
    assert "beyond" in usage_problem(Usage(input_tokens=8000, output_tokens=1001), 9000)
    assert usage_problem(Usage(input_tokens=10, cached_tokens=11), 9000) is not None
    assert usage_problem(Usage(input_tokens=10**8), 0) is not None  # unknown: the ceiling
    assert usage_problem(Usage(input_tokens=10**15, reported=False), 9000) is None  # estimated


@pytest.mark.parametrize(
    "body",
    [{"choices": ["notadict", 5]}, {"choices": [{"message": {"content": 5}}]},
     {"choices": [{"message": "hi"}]}, {"choices": "all"}, {"id": "x"}, [1, 2],
     {"choices": [{"message": {"content": "hi", "tool_calls": [{"function": "f"}]}}]},
     {"choices": [{"index": "0", "message": {"content": "hi"}}]}],
)  # fmt: skip
def test_a_completion_of_the_wrong_shape_is_refused(body):
    with pytest.raises((TypeError, ValueError)):
        check_completion(body)


@pytest.mark.parametrize(
    "chunk",
    [{"choices": ["x"]}, {"choices": [{"delta": {"content": 5}}]}, {"choices": [{"delta": 1}]},
     {"choices": [{"delta": {"tool_calls": [{"index": [0]}]}}]}, "chunk"],
)  # fmt: skip
def test_a_chunk_of_the_wrong_shape_is_refused(chunk):
    with pytest.raises((TypeError, ValueError)):
        check_chunk(chunk)


async def test_a_malformed_chunk_in_a_stream_is_a_bad_response():
    frames = [data({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
              data({"choices": [{"index": 0, "delta": {"content": 5}}]})]  # fmt: skip
    provider = adapter("openai", lambda r: sse_response(*frames))
    with pytest.raises(ProviderError) as caught:
        await drain(provider, chat(stream=True))
    assert caught.value.kind == "bad_response"


async def test_an_answer_over_max_response_bytes_is_a_bad_response():
    big = {**COMPLETION, "choices": [{"message": {"content": "x" * 5000}}]}
    provider = adapter("openai", lambda r: answer(big), options={"max_response_bytes": 4096})
    with pytest.raises(ProviderError) as caught:
        await provider.complete(chat())
    assert caught.value.kind == "bad_response" and "larger than 4096" in caught.value.message
    assert caught.value.public == "upstream answer too large"
    fits = adapter("openai", lambda r: answer(big), options={"max_response_bytes": 6000})
    assert (await fits.complete(chat())).body["choices"][0]["message"]["content"]


async def test_a_stream_over_max_stream_bytes_is_a_bad_response():
    frames = [data({"choices": [{"index": 0, "delta": {"content": "y" * 1000}}]})] * 5
    provider = adapter("openai", lambda r: sse_response(*frames),
                       options={"max_stream_bytes": 3000})  # fmt: skip
    with pytest.raises(ProviderError) as caught:
        await drain(provider, chat(stream=True))
    assert caught.value.kind == "bad_response" and "larger than 3000" in caught.value.message


@pytest.mark.parametrize(
    ("status", "public"),
    [(401, "upstream authentication failed"), (429, "upstream rate limited"),
     (500, "upstream error 500"), (529, "upstream overloaded")],
)  # fmt: skip
async def test_clients_read_a_generic_reason_and_the_detail_is_scrubbed(status, public):
    text = "bad key sk-proj-abcdefgh12345678 at http://10.0.0.5:8000/v1 via db.internal"
    provider = adapter("openai", lambda r: answer({"error": {"message": text}}, status))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(chat())
    assert caught.value.public == public
    for leak in ("sk-proj-abcdefgh", "10.0.0.5", "db.internal", "upstream.test"):
        assert leak not in caught.value.message


async def test_a_callers_fault_keeps_its_message_scrubbed():
    text = "Invalid 'temperature' (seen by gw-abcdefgh12345678 on inference.corp:8443)"
    error = {"error": {"message": text, "param": "temperature"}}
    provider = adapter("openai", lambda r: answer(error, 400))
    with pytest.raises(ProviderError) as caught:
        await provider.complete(chat())
    assert not caught.value.retryable
    assert caught.value.public.endswith("Invalid 'temperature' (seen by [REDACTED_KEY] on "
                                        "[REDACTED_HOST])")  # fmt: skip
    assert caught.value.body["error"]["param"] == "temperature"


def test_scrubbing_keeps_the_callers_parameter_paths():
    text = "messages.0.content.1.text: Field required; see messages[2].role"
    assert scrub_provider_text(text) == text
    assert scrub_provider_text("upstream.test said no", host="upstream.test") == (
        "[REDACTED_HOST] said no"
    )
