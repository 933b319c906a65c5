"""The pure translations of the inbound formats to chat, one rule per test."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from gateway.inbound import anthropic_messages, responses


def messages(**body):
    return anthropic_messages.to_chat(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}], **body}
    )


def test_a_failed_tool_result_says_so_in_the_tool_message():
    chat = messages(
        messages=[
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f"}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "boom",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Go on"},
                ],
            },
        ]
    )
    assert chat["messages"][1:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
        {"role": "user", "content": [{"type": "text", "text": "Go on"}]},
    ]
    assert chat["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_choice_any_without_parallel_calls_is_required_and_not_parallel():
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    chat = messages(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False


def test_disabled_thinking_is_accepted_and_a_stream_asks_for_usage():
    chat = messages(thinking={"type": "disabled"}, stream=True)
    assert chat["stream_options"] == {"include_usage": True}


EPHEMERAL = {"type": "ephemeral"}


def test_cache_breakpoints_ride_on_the_chat_parts_messages_and_tools_they_were_set_on():
    chat = messages(
        system=[{"type": "text", "text": "Long rules.", "cache_control": EPHEMERAL}],
        tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "cache_control": EPHEMERAL}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "calling"},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "f",
                        "input": {},
                        "cache_control": EPHEMERAL,
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "42",
                        "cache_control": EPHEMERAL,
                    }
                ],
            },
        ],
    )
    system, user, assistant, tool = chat["messages"]
    assert system == {
        "role": "system",
        "content": [{"type": "text", "text": "Long rules.", "cache_control": EPHEMERAL}],
    }
    assert user["content"] == [{"type": "text", "text": "x", "cache_control": EPHEMERAL}]
    assert assistant["cache_control"] == EPHEMERAL and assistant["tool_calls"][0]["id"] == "t1"
    assert tool == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "42",
        "cache_control": EPHEMERAL,
    }
    assert chat["tools"][0]["cache_control"] == EPHEMERAL


def test_a_breakpoint_chat_cannot_place_or_read_is_refused_by_its_path():
    early = {"type": "text", "text": "x", "cache_control": EPHEMERAL}
    turn = {"role": "assistant", "content": [early, {"type": "text", "text": "y"}]}
    with pytest.raises(InvalidRequest) as refused:
        messages(messages=[{"role": "user", "content": "Hi"}, turn])
    assert refused.value.param == "messages.1.content.0.cache_control"
    bad = {"type": "text", "text": "x", "cache_control": "ephemeral"}
    with pytest.raises(InvalidRequest) as refused:
        messages(messages=[{"role": "user", "content": [bad]}])
    assert refused.value.param == "messages.0.content.0.cache_control"


def test_the_usage_of_a_message_excludes_cache_writes_from_input_tokens():
    usage = {"prompt_tokens": 1100, "completion_tokens": 7}
    usage["prompt_tokens_details"] = {"cached_tokens": 60, "cache_write_tokens": 1000}
    assert anthropic_messages.usage(usage) == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 1000,
    }


def test_the_usage_of_a_message_excludes_cache_reads_from_input_tokens():
    usage = {"prompt_tokens": 100, "completion_tokens": 7}
    usage["prompt_tokens_details"] = {"cached_tokens": 60}
    assert anthropic_messages.usage(usage)["input_tokens"] == 40
    assert anthropic_messages.usage(usage)["cache_read_input_tokens"] == 60


def test_consecutive_function_calls_are_one_assistant_turn():
    chat = responses.to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Two cities"},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {"type": "function_call_output", "call_id": "b", "output": "2"},
            ],
        }
    )
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == ["a", "b"]


def test_input_images_and_text_parts_become_chat_parts():
    chat = responses.to_chat(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    ],
                }
            ]
        }
    )
    assert chat["model"] == "auto"
    assert chat["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA"},
    }


def test_a_length_stop_is_an_incomplete_response():
    body = {"choices": [{"message": {"content": "Hel"}, "finish_reason": "length"}]}
    out = responses.from_chat(body, {"model": "m"}, response_id="resp_x")
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
