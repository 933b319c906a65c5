"""The provider contract, run against every registered adapter with its own wire fixtures.

A new provider is one adapter module, one line in `gateway.providers.ADAPTERS` and one
`Wire` here: the first test fails until the wire is written, and every test below then runs
on it. What is particular to one provider (its headers, its translation, its extra events)
stays in that provider's own test file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.providers import ADAPTERS, kind_choices
from gateway.providers.base import ProviderAdapter, ProviderError
from tests.providers.support import (
    SECRET,
    adapter,
    chat,
    data,
    drain,
    event,
    raises,
    sse_response,
    text_of,
)


@dataclass(frozen=True)
class Wire:
    """How one provider says "Hello!" (12 tokens in, 3 out), plain and streamed, and how
    it says an error."""

    answer: dict[str, Any]
    stream: tuple[bytes, ...]  # a complete stream; its last frame is the end-of-answer mark
    error: Callable[[str], dict[str, Any]]


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return data(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "upstream-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
    )


OPENAI = Wire(
    answer={
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    },
    stream=(
        _openai_chunk({"role": "assistant", "content": ""}),
        _openai_chunk({"content": "Hel"}),
        _openai_chunk({"content": "lo!"}),
        _openai_chunk({}, "stop"),
        data(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "upstream-model",
                "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            }
        ),
        b"data: [DONE]\n\n",
    ),
    error=lambda message: {"error": {"message": message, "type": "x", "code": None}},
)

ANTHROPIC = Wire(
    answer={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "upstream-model",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    },
    stream=(
        event(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "upstream-model",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            }
        ),
        event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        event({"type": "ping"}),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            }
        ),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo!"},
            }
        ),
        event({"type": "content_block_stop", "index": 0}),
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            }
        ),
        event({"type": "message_stop"}),
    ),
    error=lambda message: {"type": "error", "error": {"type": "api_error", "message": message}},
)

# Every kind that speaks HTTP, with its wire. The simulated provider has no wire: it answers
# from its options, and the HTTP half of the contract does not apply to it.
WIRES: dict[str, Wire | None] = {
    "openai": OPENAI,
    "openai_compatible": OPENAI,
    "anthropic": ANTHROPIC,
    "simulated": None,
}
HTTP_KINDS = sorted(kind for kind, wire in WIRES.items() if wire is not None)


def test_every_registered_adapter_has_a_wire_and_is_a_choice_in_the_admin():
    assert set(WIRES) == set(ADAPTERS)
    assert [kind for kind, _ in kind_choices()] == list(ADAPTERS)
    assert all(label for _, label in kind_choices())


def http_adapter(kind: str, handler: Callable[[httpx.Request], httpx.Response]) -> ProviderAdapter:
    return adapter(kind, handler, base_url="https://upstream.test/v1")


def build(kind: str) -> ProviderAdapter:
    """An adapter that answers "Hello!" plainly or streamed, by its own wire format."""
    wire = WIRES[kind]
    if wire is None:
        return adapter(kind, _no_network, base_url="", api_key="", options={"latency_ms": 0})

    def answer(request: httpx.Request) -> httpx.Response:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return sse_response(*wire.stream)
        return httpx.Response(200, json=wire.answer)

    return http_adapter(kind, answer)


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"a provider without a wire called {request.url}")


# Every adapter: the answer, its usage, and a stream that says the same.


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_a_plain_answer_is_an_openai_completion_with_reported_usage(kind):
    completion = await build(kind).complete(chat())
    (choice,) = completion.body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert completion.usage.reported is True
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
async def test_a_stream_says_what_the_plain_answer_says_and_costs_the_same(kind):
    completion = await build(kind).complete(chat())
    chunks, result = await drain(build(kind), chat(stream=True))
    assert text_of(chunks) == completion.body["choices"][0]["message"]["content"]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (
        completion.usage.input_tokens,
        completion.usage.output_tokens,
    )


# Every adapter that speaks HTTP: how each failure maps, once, to a ProviderError.


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_stream_without_its_end_of_answer_mark_is_cut(kind):
    cut_short = WIRES[kind].stream[:-1]
    with pytest.raises(ProviderError) as caught:
        await drain(http_adapter(kind, lambda r: sse_response(*cut_short)), chat(stream=True))
    assert (caught.value.retryable, caught.value.kind) == (True, "stream_cut")


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_what_follows_the_end_of_answer_mark_is_ignored(kind):
    trailing = (*WIRES[kind].stream, b"data: {not json\n\n")
    chunks, result = await drain(
        http_adapter(kind, lambda r: sse_response(*trailing)), chat(stream=True)
    )
    assert text_of(chunks) == "Hello!"
    assert result.usage.output_tokens == 3


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_dropped_connection_mid_stream_is_cut(kind):
    answer = sse_response(WIRES[kind].stream[0], then=httpx.RemoteProtocolError("incomplete"))
    with pytest.raises(ProviderError) as caught:
        await drain(http_adapter(kind, lambda r: answer), chat(stream=True))
    assert (caught.value.retryable, caught.value.kind) == (True, "stream_cut")


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "connection_error"),
    ],
)
async def test_a_network_failure_is_retryable_plain_or_streamed(kind, failure, expected):
    for call in (lambda a: a.complete(chat()), lambda a: drain(a, chat(stream=True))):
        with pytest.raises(ProviderError) as caught:
            await call(http_adapter(kind, raises(failure)))
        assert (caught.value.retryable, caught.value.kind) == (True, expected)


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, "rate_limited"), (500, "server_error"), (503, "server_error"), (529, "overloaded")],
)
async def test_rate_limits_and_server_errors_are_retryable_with_retry_after(kind, status, expected):
    answer = httpx.Response(status, json=WIRES[kind].error("busy"), headers={"retry-after": "2"})
    for call in (lambda a: a.complete(chat()), lambda a: drain(a, chat(stream=True))):
        with pytest.raises(ProviderError) as caught:
            await call(http_adapter(kind, lambda r: answer))
        assert (caught.value.retryable, caught.value.status, caught.value.kind) == (
            True,
            status,
            expected,
        )
        assert caught.value.retry_after == 2.0


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_400_is_not_retryable_and_keeps_the_providers_error_body(kind):
    body = WIRES[kind].error("messages: bad request")
    with pytest.raises(ProviderError) as caught:
        await http_adapter(kind, lambda r: httpx.Response(400, json=body)).complete(chat())
    assert (caught.value.retryable, caught.value.status, caught.value.kind) == (
        False,
        400,
        "invalid_request",
    )
    assert caught.value.body == body
    assert "bad request" in caught.value.message


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize("content", [b"<html>502</html>", b"{", b'{"id": "x"}', b"[1, 2]"])
async def test_a_malformed_answer_is_a_retryable_bad_response(kind, content):
    with pytest.raises(ProviderError) as caught:
        await http_adapter(kind, lambda r: httpx.Response(200, content=content)).complete(chat())
    assert (caught.value.retryable, caught.value.kind) == (True, "bad_response")


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_the_api_key_never_appears_in_an_error(kind):
    echoed = WIRES[kind].error(f"Incorrect API key provided: {SECRET}")
    with pytest.raises(ProviderError) as caught:
        await http_adapter(kind, lambda r: httpx.Response(401, json=echoed)).complete(chat())
    assert SECRET not in caught.value.message
    assert SECRET not in str(caught.value.body)
    assert caught.value.kind == "auth_error"
