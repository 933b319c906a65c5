"""Legacy `functions` / `function_call` as tools and back (gateway/providers/legacy.py)."""

from __future__ import annotations

import pytest

from gateway.providers.legacy import chunk_to_legacy, request_to_tools, response_to_legacy

FN = {"name": "f", "parameters": {"type": "object", "properties": {}}}


@pytest.mark.parametrize(
    ("function_call", "tool_choice"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ({"name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_functions_become_tools_with_one_call_at_a_time(function_call, tool_choice):
    body = {"model": "m", "messages": [], "functions": [FN]}
    if function_call is not None:
        body["function_call"] = function_call
    out = request_to_tools(body)
    assert out["tools"] == [{"type": "function", "function": FN}]
    assert out.get("tool_choice") == tool_choice
    assert out["parallel_tool_calls"] is False
    assert "functions" not in out and "function_call" not in out


@pytest.mark.parametrize(
    "body",
    [
        {"functions": [FN], "tools": []},
        {"functions": "f"},
        {"functions": [FN], "function_call": 3},
        {"function_call": "auto"},
    ],
)
def test_what_cannot_be_translated_is_a_value_error(body):
    with pytest.raises(ValueError):
        request_to_tools({"messages": [], **body})


def test_the_answer_comes_back_as_function_call():
    body = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ]
    }
    out = response_to_legacy(body)
    assert out["choices"][0] == {
        "index": 0,
        "finish_reason": "function_call",
        "message": {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "f", "arguments": "{}"},
        },
    }
    assert "tool_calls" in body["choices"][0]["message"]  # the original is left as it was


def test_stream_chunks_come_back_as_function_call_deltas():
    def chunk(delta, finish=None):
        return {"id": "x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    start = chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        }
    )
    assert chunk_to_legacy(start)["choices"][0]["delta"] == {
        "function_call": {"name": "f", "arguments": ""}
    }
    more = chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})
    assert chunk_to_legacy(more)["choices"][0]["delta"] == {"function_call": {"arguments": '{"a"'}}
    last = chunk_to_legacy(chunk({}, "tool_calls"))
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "function_call"}
    text = chunk({"content": "hi"})
    assert chunk_to_legacy(text) == text
