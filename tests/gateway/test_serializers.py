"""Chat request validation: every refusal is an InvalidRequest naming its field, and nothing
else ever escapes, whatever the client sends."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest
from gateway.validation import MAX_NESTING, parse_json, upstream_body, validate_chat

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat(**fields):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **fields}


def refusal(data) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_chat(data)
    assert info.value.status == 400
    assert info.value.code == "invalid_request"
    return info.value


def test_it_accepts_a_plain_request_and_passes_unknown_fields_through():
    body = chat(temperature=0.2, max_tokens=100, stop=["\n"], logit_bias={"50256": -100})
    assert validate_chat(dict(body)) == body


def test_it_defaults_a_missing_or_null_model_to_auto():
    assert validate_chat({"messages": [{"role": "user", "content": "x"}]})["model"] == "auto"
    assert validate_chat(chat(model=None))["model"] == "auto"


def test_it_accepts_an_assistant_tool_call_message_without_content():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert validate_chat(chat(messages=messages))["messages"] == messages


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        (chat(messages=[]), "messages"),
        (chat(messages="hi"), "messages"),
        (chat(model=""), "model"),
        (chat(model=3), "model"),
        (chat(messages=["hi"]), "messages[0]"),
        (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": {"a": 1}, "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user"}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}]),
            "messages[0].content[1]",
        ),
        (
            chat(messages=[{"role": "user", "content": [{"type": "video"}]}]),
            "messages[0].content[0].type",
        ),
        (
            chat(messages=[{"role": "user", "content": [{"type": ["text"]}]}]),
            "messages[0].content[0].type",
        ),
        (
            chat(messages=[{"role": "user", "content": "ok"}, {"role": "x", "content": "y"}]),
            "messages[1].role",
        ),
    ],
)
def test_a_bad_message_list_is_refused_naming_the_field(body, param):
    assert refusal(body).param == param


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("temperature", "0.5"),
        ("temperature", True),
        ("top_p", 1.5),
        ("presence_penalty", -3),
        ("frequency_penalty", False),
        ("max_tokens", -1),
        ("max_tokens", 0),
        ("max_tokens", 1.5),
        ("max_tokens", True),
        ("n", True),
        ("n", 0),
        ("n", 129),
        ("seed", 2**64),
        ("seed", "42"),
        ("stop", 3),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stream", "yes"),
        ("stream_options", []),
        ("response_format", "json"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(field, value):
    assert refusal(chat(**{field: value})).param == field


def test_a_bad_item_of_a_list_is_refused_naming_the_item():
    assert refusal(chat(stop=["a", 1])).param == "stop[1]"


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ({"type": "function"}, "tools"),
        (["f"], "tools[0]"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": 7}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "ok"}}, {"function": {}}], "tools[1].type"),
        ([{"type": "function", "function": {"name": "ok"}}, {"type": "x"}], "tools[1].type"),
    ],
)
def test_bad_tools_are_refused_naming_the_tool(tools, param):
    assert refusal(chat(tools=tools)).param == param


@pytest.mark.parametrize("value", [[], "hi", 3, None, True])
def test_a_body_that_is_not_an_object_is_refused(value):
    assert "JSON object" in refusal(value).message


def test_an_empty_body_is_refused():
    with pytest.raises(InvalidRequest, match="empty"):
        parse_json(b"")


def test_a_body_that_is_not_utf8_is_refused():
    with pytest.raises(InvalidRequest, match="UTF-8"):
        parse_json(b'{"model": "m\xff"}')


@pytest.mark.parametrize(
    "raw", [b"{", b"{'a': 1}", b"[1,]", b"NaN", b'{"a": 1e999}', b"\xef\xbb\xbf{}"]
)
def test_a_body_that_is_not_json_is_refused(raw):
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_json(raw)


def test_a_body_nesting_deeper_than_the_limit_is_refused():
    too_deep = b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1)
    with pytest.raises(InvalidRequest, match=f"deeper than {MAX_NESTING}"):
        parse_json(too_deep)
    with pytest.raises(InvalidRequest, match=f"deeper than {MAX_NESTING}"):
        parse_json(b'{"a":' * 200 + b"1" + b"}" * 200)


def test_a_body_nesting_exactly_to_the_limit_is_parsed():
    at_limit = b"[" * MAX_NESTING + b"]" * MAX_NESTING
    value = parse_json(at_limit)
    for _ in range(MAX_NESTING - 1):
        value = value[0]
    assert value == []


def test_a_wide_shallow_body_with_many_brackets_is_parsed():
    # More brackets than the limit, in strings and side by side, but nested only 4 deep.
    messages = [{"role": "user", "content": "[{" * 50}] * (MAX_NESTING + 1)
    raw = orjson.dumps({"model": "m", "messages": messages})
    assert parse_json(raw)["messages"] == messages


def test_the_upstream_body_drops_only_the_streaming_switches():
    body = chat(stream=True, stream_options={"include_usage": True}, user="u1", temperature=0)
    assert upstream_body(body) == chat(user="u1", temperature=0)


# --- Nothing but InvalidRequest ever escapes --------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [
    "model", "temperature", "top_p", "presence_penalty", "frequency_penalty", "max_tokens",
    "max_completion_tokens", "n", "seed", "stop", "stream", "stream_options", "tools",
    "response_format",
]  # fmt: skip
# Messages and parts built from the names validation looks at, with arbitrary values.
part = st.dictionaries(st.sampled_from(["type", "text"]), st.just("text") | json_values, max_size=2)
message = st.dictionaries(
    st.sampled_from(["role", "content", "tool_calls"]),
    st.sampled_from(sorted(ROLES)) | st.lists(part, max_size=2) | json_values,
    max_size=3,
)
chat_like = st.builds(
    lambda extra, messages: {**extra, "messages": messages},
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), json_values, max_size=5),
    st.lists(message | json_values, max_size=3),
)


# No deadline nor speed health check: they only measure how busy the machine is.
fuzz = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _validate_or_refuse(data) -> None:
    try:
        result = validate_chat(data)
    except InvalidRequest as exc:
        assert exc.message
        return
    assert isinstance(result, dict) and result["messages"]


@fuzz
@given(json_values)
def test_any_json_value_is_parsed_then_refused_only_with_invalid_request(data):
    # The stdlib encoder, so that integers beyond 64 bits reach the parser too.
    _validate_or_refuse(parse_json(json.dumps(data).encode()))


@fuzz
@given(chat_like)
def test_any_chat_shaped_body_is_refused_only_with_invalid_request(data):
    _validate_or_refuse(data)


@fuzz
@given(st.binary(max_size=200))
def test_parse_json_refuses_any_bytes_only_with_invalid_request(raw):
    try:
        data = parse_json(raw)
    except InvalidRequest:
        return
    _validate_or_refuse(data)
