"""Anthropic request and answer translation (gateway/providers/anthropic_format.py),
observed through the adapter with a MockTransport."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers.anthropic_format import refusals
from gateway.providers.base import ProviderError
from tests.providers.support import ANTHROPIC_MESSAGE as MESSAGE
from tests.providers.support import (
    adapter,
    chat,
    drain,
    event,
    recording,
    sent_json,
    sse_response,
    text_of,
)


async def sent_for(request, answer=None) -> dict:
    """The Anthropic body the adapter sends for an OpenAI request."""
    seen: list[httpx.Request] = []
    await adapter(
        "anthropic", recording(httpx.Response(200, json=answer or MESSAGE), seen)
    ).complete(request)
    return sent_json(seen[0])


async def answer_for(message: dict) -> dict:
    return (
        await adapter("anthropic", lambda r: httpx.Response(200, json=message)).complete(chat())
    ).body


# Request translation


async def test_system_messages_become_the_system_field_and_max_tokens_defaults():
    body = await sent_for(
        chat(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No jokes."}]},
                {"role": "user", "content": "Hi"},
            ]
        )
    )
    assert body["system"] == "Be brief.\n\nNo jokes."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert body["model"] == "upstream-model"
    assert body["max_tokens"] == 4096


async def test_sampling_options_are_translated():
    body = await sent_for(
        chat(max_completion_tokens=50, temperature=0.7, top_p=0.9, stop="END", user="u-1")
    )
    # Sent as asked, never clamped: above 1 the adapter refuses (see test_fidelity.py).
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (50, 0.7, 0.9)
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}


async def test_function_tools_and_tool_choice_are_translated():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Get weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    body = await sent_for(
        chat(
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "weather"}},
            parallel_tool_calls=False,
        )
    )
    assert body["tools"] == [
        {
            "name": "weather",
            "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "weather",
        "disable_parallel_tool_use": True,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
async def test_tool_choice_strings_are_translated(choice, expected):
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = await sent_for(chat(tools=tools, tool_choice=choice))
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


async def test_tool_calls_and_tool_results_become_tool_use_and_tool_result_blocks():
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
    ]
    body = await sent_for(chat(messages))
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
            ],
        },
    ]


async def test_images_become_base64_or_url_sources():
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
    ]
    body = await sent_for(chat([{"role": "user", "content": parts}]))
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
    ]


async def test_tool_call_arguments_that_are_not_json_fail_without_an_upstream_call():
    seen: list[httpx.Request] = []
    messages = [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ],
        }
    ]
    with pytest.raises(ProviderError) as caught:
        await adapter("anthropic", recording(httpx.Response(200, json=MESSAGE), seen)).complete(
            chat(messages)
        )
    assert (caught.value.retryable, caught.value.status, caught.value.kind) == (
        False,
        400,
        "invalid_request",
    )
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert seen == []


# Answer translation


async def test_the_answer_becomes_an_openai_chat_completion():
    body = await answer_for(MESSAGE)
    assert body["id"] == "msg_1"
    assert body["object"] == "chat.completion"
    assert body["model"] == "claude-x"
    assert body["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
        }
    ]


async def test_cache_reads_and_writes_count_as_prompt_tokens():
    completion = await adapter("anthropic", lambda r: httpx.Response(200, json=MESSAGE)).complete(
        chat()
    )
    usage = completion.usage
    assert (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
    ) == (130, 7, 100, 20)
    assert completion.body["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 7,
        "total_tokens": 137,
        # The cache writes too: a client can tell what its breakpoints cost (Responses' name).
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
    }


async def test_tool_use_blocks_become_tool_calls():
    message = {
        **MESSAGE,
        "stop_reason": "tool_use",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ],
    }
    choice = (await answer_for(message))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "refusal": None,
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
    ],
)
async def test_stop_reasons_map_to_finish_reasons(stop_reason, finish):
    body = await answer_for({**MESSAGE, "stop_reason": stop_reason})
    assert body["choices"][0]["finish_reason"] == finish


# Structured output (response_format) as a forced tool, both ways


SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city info",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
FORCED = {
    **MESSAGE,
    "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "city_info", "input": {"city": "Rome"}}
    ],
    "stop_reason": "tool_use",
}


async def test_a_json_schema_becomes_one_forced_tool():
    body = await sent_for(chat(response_format=SCHEMA_FORMAT), FORCED)
    assert body["tools"] == [
        {
            "name": "city_info",  # Anthropic's tool names allow [a-zA-Z0-9_-] only
            "description": "Give the answer as this tool's input.",
            "input_schema": SCHEMA_FORMAT["json_schema"]["schema"],
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "city_info"}
    assert "response_format" not in body


async def test_a_text_response_format_changes_nothing():
    body = await sent_for(chat(response_format={"type": "text"}))
    assert "tools" not in body and "tool_choice" not in body


async def test_the_forced_tools_input_comes_back_as_json_content_and_stop():
    answer = (
        await adapter("anthropic", lambda r: httpx.Response(200, json=FORCED)).complete(
            chat(response_format=SCHEMA_FORMAT)
        )
    ).body
    choice = answer["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": '{"city":"Rome"}',
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"


async def test_a_structured_answer_cut_at_max_tokens_says_length():
    cut_short = {**FORCED, "stop_reason": "max_tokens"}
    answer = (
        await adapter("anthropic", lambda r: httpx.Response(200, json=cut_short)).complete(
            chat(response_format=SCHEMA_FORMAT)
        )
    ).body
    assert answer["choices"][0]["finish_reason"] == "length"


async def test_a_structured_stream_turns_input_json_deltas_into_content():
    start = {"type": "message_start", "message": {**MESSAGE, "content": []}}
    block = {"type": "tool_use", "id": "toolu_1", "name": "city_info", "input": {}}
    frames = [
        event(start),
        event({"type": "content_block_start", "index": 0, "content_block": block}),
        *[
            event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                }
            )
            for part in ('{"city"', ': "Rome"}')
        ],
        event({"type": "content_block_stop", "index": 0}),
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 9},
            }
        ),
        event({"type": "message_stop"}),
    ]
    seen: list[httpx.Request] = []
    chunks, result = await drain(
        adapter("anthropic", recording(lambda: sse_response(*frames), seen)),
        chat(response_format=SCHEMA_FORMAT, stream=True),
    )
    assert sent_json(seen[0])["tool_choice"] == {"type": "tool", "name": "city_info"}
    assert text_of(chunks) == '{"city": "Rome"}'
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert result.finish_reason == "stop"


def test_refusals_name_what_anthropic_cannot_honour():
    body = {"messages": [], "logprobs": False, "seed": 1, "temperature": 1.5}
    assert refusals(body) == {
        "seed": "",
        "temperature": " 1.5 is outside the range 0..1 accepted",
    }
    assert refusals({"messages": [], "temperature": 1, "response_format": {"type": "text"}}) == {}
    tool = {"type": "function", "function": {"name": "city_info"}}
    assert refusals({"response_format": SCHEMA_FORMAT, "tools": [tool], "messages": []}) == {
        "response_format": " named 'city_info' like one of the request's tools is not supported"
    }


@pytest.mark.parametrize(
    ("tool_choice", "tools", "choice_sent"),
    [
        (None, ["lookup", "city_info"], {"type": "any", "disable_parallel_tool_use": True}),
        ("auto", ["lookup", "city_info"], {"type": "any", "disable_parallel_tool_use": True}),
        ("none", ["city_info"], {"type": "tool", "name": "city_info"}),
        ("required", ["lookup"], {"type": "any"}),
    ],
)
async def test_a_schema_with_the_requests_own_tools(tool_choice, tools, choice_sent):
    lookup = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    extra = {"tool_choice": tool_choice} if tool_choice else {}
    body = await sent_for(chat(response_format=SCHEMA_FORMAT, tools=[lookup], **extra), FORCED)
    assert [t["name"] for t in body["tools"]] == tools
    assert body["tool_choice"] == choice_sent
