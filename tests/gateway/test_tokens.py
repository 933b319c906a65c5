"""Token counts without a tokenizer: the typical estimate and the never-too-low upper bound."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tokens import TOOL_PROMPT_TOKENS, estimate_prompt, estimate_text, prompt_upper_bound

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_a_text_estimate_is_a_token_per_four_characters_rounded_up():
    assert [estimate_text(t) for t in ("", "abcd", "abcde", "x" * 400)] == [0, 1, 2, 100]


def test_a_prompt_estimate_counts_text_parts_and_a_framing_per_message():
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, IMAGE]},
        ]
    }
    # "You are terse.\nHi" is 17 characters: 5 tokens, plus 4 per message.
    assert estimate_prompt(body) == 5 + 8


def test_a_prompt_estimate_counts_tool_calls_and_tool_definitions():
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [CALL]}]}
    calls = len(orjson.dumps([CALL]))
    assert estimate_prompt(body) == (calls + 3) // 4 + 4
    with_tools = estimate_prompt({**body, "tools": tools})
    assert with_tools == (calls + 3) // 4 + 4 + (len(orjson.dumps(tools)) + 3) // 4


def test_the_upper_bound_is_the_bytes_of_the_messages_plus_framing():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert len(b'[{"role":"user","content":"hi"}]') == 32
    assert prompt_upper_bound(body) == 32 + 4


def test_the_upper_bound_counts_multibyte_characters_in_bytes():
    plain = prompt_upper_bound({"messages": [{"role": "user", "content": "ab"}]})
    wide = prompt_upper_bound({"messages": [{"role": "user", "content": "日本"}]})
    assert wide - plain == 6 - 2


def test_the_upper_bound_counts_each_image_as_two_thousand_tokens():
    text = {"type": "text", "text": "what is this?"}
    body = {"messages": [{"role": "user", "content": [text, IMAGE, IMAGE]}]}
    assert prompt_upper_bound(body) == len(orjson.dumps(body["messages"])) + 4 + 4000


def test_the_upper_bound_counts_tool_definitions_and_the_tool_prompt_they_bring():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = {"messages": [{"role": "user", "content": "x"}]}
    gained = prompt_upper_bound({**body, "tools": tools}) - prompt_upper_bound(body)
    assert gained == len(orjson.dumps(tools)) + TOOL_PROMPT_TOKENS


def test_the_upper_bound_counts_a_response_formats_schema_which_claude_gets_as_a_tool():
    schema = {"name": "City", "schema": {"type": "object", "properties": {"city": {}}}}
    structured = {"type": "json_schema", "json_schema": schema}
    body = {"messages": [{"role": "user", "content": "x"}]}
    gained = prompt_upper_bound({**body, "response_format": structured}) - prompt_upper_bound(body)
    assert gained == len(orjson.dumps(structured)) + TOOL_PROMPT_TOKENS
    plain = prompt_upper_bound({**body, "response_format": {"type": "text"}})
    assert plain == prompt_upper_bound(body)


messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant"]),
            "content": st.text()
            | st.lists(
                st.builds(lambda t: {"type": "text", "text": t}, st.text()) | st.just(IMAGE)
            ),
        }
    ),
    max_size=5,
)


@settings(max_examples=50, deadline=None)
@given(messages)
def test_the_upper_bound_is_never_below_the_utf8_bytes_of_the_text(msgs):
    texts = [
        m["content"]
        if isinstance(m["content"], str)
        else "".join(p.get("text", "") for p in m["content"])
        for m in msgs
    ]
    assert prompt_upper_bound({"messages": msgs}) >= sum(len(t.encode()) for t in texts)


@settings(max_examples=50, deadline=None)
@given(messages)
def test_the_upper_bound_is_never_below_the_estimate(msgs):
    body = {"messages": msgs}
    assert prompt_upper_bound(body) >= estimate_prompt(body)
