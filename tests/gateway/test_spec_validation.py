"""Chat requests are held to OpenAI's own schema (gateway/spec, issue 25): what the spec
accepts is accepted, whatever it refuses is a 400 naming the field, before any provider."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from gateway.spec import COMMIT, spec, to_json_schema
from gateway.validation import validate_chat

USER = {"role": "user", "content": "hi"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def chat(*messages, **fields):
    return {"model": "gpt-4o-mini", "messages": list(messages or [USER]), **fields}


def test_the_vendored_spec_is_openais_2_3_0():
    assert spec().version == "2.3.0"
    assert COMMIT.startswith("f85dbe2")


def test_nullable_is_read_as_json_schemas_null():
    assert to_json_schema({"type": "integer", "nullable": True}) == {
        "anyOf": [{"type": "integer"}, {"type": "null"}]
    }


@pytest.mark.parametrize(
    "body",
    [
        chat(USER, {"role": "assistant", "content": None}),
        chat(USER, {"role": "assistant"}),
        chat(USER, {"role": "assistant", "refusal": "I can't."}),
        chat(USER, {"role": "assistant", "audio": {"id": "audio_1"}}),
        chat(USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}),
        chat(USER, {"role": "assistant", "tool_calls": []}),
        chat(USER, {"role": "function", "name": "f", "content": None}),
        chat(
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ),
        chat(stream=None),
        chat(n=128),
        chat(max_tokens=2_000_000),
        chat(max_tokens=100.0),
        chat(tools=[{"type": "custom", "custom": {"name": "sql"}}]),
        chat(
            tools=[{"type": "custom", "custom": {"name": "sql"}}],
            tool_choice={"type": "custom", "custom": {"name": "sql"}},
        ),
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
        chat(stream_options={"include_usage": True}, stream=True),
        chat(seed=None, temperature=None, logit_bias=None, metadata=None),
    ],
)
def test_a_request_valid_per_the_spec_is_accepted(body):
    assert validate_chat(body)["messages"]


def test_a_null_the_spec_allows_anywhere_is_not_sent():
    # Nullable in the chat request's own properties, not in a shared part it is built from.
    assert "top_logprobs" not in validate_chat(chat(top_logprobs=None))


def test_null_means_not_sent_and_a_whole_float_is_an_integer():
    body = validate_chat(chat(stream=None, n=None, max_tokens=100.0, seed=7.0))
    assert "stream" not in body and "n" not in body
    assert body["max_tokens"] == 100 and isinstance(body["max_tokens"], int)
    assert body["seed"] == 7 and isinstance(body["seed"], int)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat({"role": "user", "content": []}), "messages[0].content"),
        (chat({"role": "user", "content": [{"type": "text"}]}), "messages[0].content[0].text"),
        (
            chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
            "messages[0].content[0].type",
        ),
        (chat({"role": "tool", "content": "x"}), "messages[0].tool_call_id"),
        (chat(service_tier="turbo"), "service_tier"),
        (chat(reasoning_effort="extreme"), "reasoning_effort"),
        (chat(modalities=["smell"]), "modalities[0]"),
        (chat(response_format={"type": "xml"}), "response_format.type"),
        (chat(logprobs="yes"), "logprobs"),
        (chat(store=1), "store"),
        (chat(user=5), "user"),
        (chat(metadata={"a": 1}), "metadata.a"),
        (chat(logit_bias={"50256": "x"}), "logit_bias.50256"),
        (chat(top_logprobs=21), "top_logprobs"),
        (chat(tools=None), "tools"),
        (chat(max_tokens=0), "max_tokens"),
    ],
)
def test_a_request_invalid_per_the_spec_is_refused_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as info:
        validate_chat(body)
    assert (info.value.status, info.value.param) == (400, param)
    assert param in info.value.message
