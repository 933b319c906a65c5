"""Contract tests of the simulated provider: deterministic, no network, proper usage."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from gateway.providers.base import ProviderError
from gateway.tokens import estimate_text as estimate_tokens
from tests.providers.support import adapter, chat, drain, text_of


def no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the simulated provider called {request.url}")


def simulated(**options):
    return adapter(
        "simulated", no_network, base_url="", api_key="", options={"latency_ms": 0, **options}
    )


async def test_the_same_request_gets_the_same_answer():
    first = await simulated().complete(chat())
    second = await simulated().complete(chat())
    assert (
        first.body["choices"][0]["message"]["content"]
        == second.body["choices"][0]["message"]["content"]
    )
    assert first.body["id"] == second.body["id"]


async def test_different_messages_get_different_answers():
    answers = {
        (await simulated().complete(chat([{"role": "user", "content": f"q{i}"}]))).body["choices"][
            0
        ]["message"]["content"]
        for i in range(5)
    }
    assert len(answers) == 5


async def test_tokens_are_a_quarter_of_the_characters_rounded_up():
    completion = await simulated().complete(chat([{"role": "user", "content": "x" * 41}]))
    answer = completion.body["choices"][0]["message"]["content"]
    assert completion.usage.input_tokens == 11
    assert completion.usage.output_tokens == math.ceil(len(answer) / 4) == estimate_tokens(answer)
    assert completion.usage.reported is True
    assert completion.body["usage"]["total_tokens"] == 11 + completion.usage.output_tokens
    assert completion.body["model"] == "upstream-model"


async def test_max_tokens_cuts_the_answer_short_with_finish_reason_length():
    full = await simulated().complete(chat())
    assert full.usage.output_tokens > 3
    short = await simulated().complete(chat(max_tokens=3))
    assert short.usage.output_tokens <= 3
    assert short.body["choices"][0]["finish_reason"] == "length"


async def test_the_stream_says_the_same_as_the_completion_word_by_word():
    completion = await simulated().complete(chat())
    chunks, result = await drain(simulated(), chat(stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == completion.body["choices"][0]["message"]["content"]
    assert len(chunks) > 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert result.usage == completion.usage
    assert result.finish_reason == "stop"


async def test_it_waits_the_configured_latency():
    start = time.perf_counter()
    await simulated(latency_ms=60).complete(chat())
    assert time.perf_counter() - start >= 0.06


async def test_a_failing_call_is_a_retryable_provider_error():
    with pytest.raises(ProviderError) as caught:
        await simulated(failure_rate=1).complete(chat())
    assert (caught.value.retryable, caught.value.status, caught.value.kind) == (
        True,
        503,
        "server_error",
    )
    assert caught.value.body["error"]["message"] == "simulated failure"


async def test_the_failure_status_is_configurable_and_mapped_like_a_real_answer():
    with pytest.raises(ProviderError) as caught:
        await drain(simulated(failure_rate=1, fail_status=400), chat())
    assert (caught.value.retryable, caught.value.status) == (False, 400)


async def test_a_zero_failure_rate_never_fails():
    for _ in range(20):
        await simulated(failure_rate=0).complete(chat())
