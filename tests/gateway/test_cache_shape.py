"""The cache never changes an answer's shape (issue 19, item 5), end to end: the official
`openai` SDK → the gateway on a loopback port → the loopback OpenAI server.

Every parameter that changes the answer is part of the key; a stored answer replays with all
it had (logprobs, refusal, service_tier, usage details), streamed or plain either way; an
answer lacking what its request asked for is never stored; and a feature may keep sampled
answers out of the cache."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from django.test import Client

from gateway.cache import CachedAnswer, cacheable
from gateway.configfile import export_config, import_config
from gateway.models import Feature
from gateway.providers.base import Usage
from gateway.streaming import Accumulator
from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.loopback import ok

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "Name the capital of France in one word."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def world(openai_server, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test-openai-secret")
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_feature(team, "fresh", cache_sampled=False)
    _, secret = make_key(team)
    oa = make_provider(
        "openai", kind="openai", base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY", options={},
    )  # fmt: skip
    make_model("gpt-4o-mini", oa)
    return {"secret": secret}


def sdk(gateway_server, world, feature: str = "chatbot") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": feature, "X-Gateway-Cache-TTL": "60"},
    )


def ask(client: openai.OpenAI, **params: Any):
    """A plain request; returns (the completion, the X-Gateway-Cache header)."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, **params
    )
    return raw.parse(), raw.headers["x-gateway-cache"]


def ask_streamed(client: openai.OpenAI, **params: Any):
    """A streamed request; returns (its chunks, the X-Gateway-Cache header)."""
    params = {"stream_options": {"include_usage": True}, **params}
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, stream=True, **params
    )
    return list(raw.parse()), raw.headers["x-gateway-cache"]


def streamed_logprobs(chunks) -> list[tuple[str, float]]:
    return [
        (t.token, t.logprob)
        for c in chunks
        for choice in c.choices
        if choice.logprobs and choice.logprobs.content
        for t in choice.logprobs.content
    ]


# The key covers every parameter that changes the answer

BASE = {"temperature": 0}  # `n` is not here: the gateway refuses n > 1 (one choice a request)
CHANGES = {
    "logprobs": ({}, {"logprobs": True}),
    "top_logprobs": ({"logprobs": True}, {"logprobs": True, "top_logprobs": 2}),
    "response_format": ({}, {"response_format": {"type": "json_object"}}),
    "tools": ({}, {"tools": [WEATHER]}),
    "tool_choice": ({"tools": [WEATHER]}, {"tools": [WEATHER], "tool_choice": "none"}),
    "parallel_tool_calls": (
        {"tools": [WEATHER]}, {"tools": [WEATHER], "parallel_tool_calls": False}
    ),
    "seed": ({}, {"seed": 7}),
    "stop": ({}, {"stop": ["END"]}),
    "max_tokens": ({}, {"max_tokens": 5}),
    "max_completion_tokens": ({"max_completion_tokens": 50}, {"max_completion_tokens": 5}),
    "temperature": ({"temperature": 0}, {"temperature": 0.4}),
    "top_p": ({}, {"top_p": 0.5}),
    "presence_penalty": ({}, {"presence_penalty": 0.5}),
    "frequency_penalty": ({}, {"frequency_penalty": 0.5}),
    "logit_bias": ({}, {"logit_bias": {"1234": -100}}),
    "reasoning_effort": ({}, {"reasoning_effort": "low"}),
    "service_tier": ({}, {"service_tier": "flex"}),
    "prediction": ({}, {"prediction": {"type": "content", "content": "Paris"}}),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CHANGES))
def test_two_requests_differing_only_in_a_parameter_do_not_share_an_entry(
    gateway_server, world, openai_server, name
):
    without, with_it = CHANGES[name]
    client = sdk(gateway_server, world)
    assert ask(client, **{**BASE, **without})[1] == "miss"
    assert ask(client, **{**BASE, **without})[1] == "hit"  # stored, under its own key
    assert ask(client, **{**BASE, **with_it})[1] == "miss"
    assert len(openai_server.requests) == 2
    assert {name} <= set(openai_server.requests[1].body) | {"max_tokens"}


# A stored answer replays with everything it had, both ways


def test_a_plain_answer_replays_as_a_stream_with_its_logprobs_tier_and_usage_details(
    gateway_server, world, openai_server
):
    openai_server.script(ok("Paris is the capital.", reasoning_tokens=4, cached_tokens=2))
    client = sdk(gateway_server, world)
    params = {"temperature": 0, "logprobs": True, "top_logprobs": 1}
    plain, status = ask(client, **params)
    assert status == "miss"
    tokens = [(t.token, t.logprob) for t in plain.choices[0].logprobs.content]
    assert len(tokens) == 4 and plain.service_tier == "default"
    chunks, status = ask_streamed(client, **params)
    assert status == "hit"
    assert streamed_logprobs(chunks) == tokens
    first = next(c for c in chunks if c.choices)
    assert first.choices[0].logprobs.content[0].top_logprobs[0].token == "Paris"
    assert {c.service_tier for c in chunks if c.choices} == {"default"}
    assert {c.system_fingerprint for c in chunks if c.choices} == {"fp_loopback"}
    (usage,) = [c.usage for c in chunks if c.usage]
    assert usage.completion_tokens_details.reasoning_tokens == 4
    assert usage.prompt_tokens_details.cached_tokens == 2
    assert len(openai_server.requests) == 1


def test_a_streamed_answer_replays_plain_with_its_logprobs_tier_and_usage_details(
    gateway_server, world, openai_server
):
    openai_server.script(ok("Paris is the capital.", reasoning_tokens=4, cached_tokens=2))
    client = sdk(gateway_server, world)
    params = {"temperature": 0, "logprobs": True}
    chunks, status = ask_streamed(client, **params)
    assert status == "miss"
    tokens = streamed_logprobs(chunks)
    assert len(tokens) == 4
    plain, status = ask(client, **params)
    assert status == "hit"
    assert [(t.token, t.logprob) for t in plain.choices[0].logprobs.content] == tokens
    assert plain.choices[0].message.content == "Paris is the capital."
    assert plain.service_tier == "default" and plain.system_fingerprint == "fp_loopback"
    assert plain.usage.completion_tokens_details.reasoning_tokens == 4
    assert plain.usage.prompt_tokens_details.cached_tokens == 2
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("first", ["plain", "stream"])
def test_a_refusal_replays_as_a_refusal_either_way(gateway_server, world, openai_server, first):
    openai_server.script(ok(refusal="I can't help with that."))
    client = sdk(gateway_server, world)
    if first == "plain":
        assert ask(client, temperature=0)[0].choices[0].message.refusal == (
            "I can't help with that."
        )
        chunks, status = ask_streamed(client, temperature=0)
        assert status == "hit"
        said = "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices)
        assert said == "I can't help with that."
    else:
        chunks, _ = ask_streamed(client, temperature=0)
        said = "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices)
        assert said == "I can't help with that."
        plain, status = ask(client, temperature=0)
        assert status == "hit"
        assert plain.choices[0].message.refusal == "I can't help with that."
        assert plain.choices[0].message.content is None
    assert len(openai_server.requests) == 1


# A request that asks for more than the stored answer has is a miss


def test_a_stored_stream_without_logprobs_does_not_answer_a_request_for_them(
    gateway_server, world, openai_server
):
    client = sdk(gateway_server, world)
    chunks, _ = ask_streamed(client, temperature=0)
    assert streamed_logprobs(chunks) == []
    plain, status = ask(client, temperature=0, logprobs=True)
    assert status == "miss"
    assert plain.choices[0].logprobs.content
    assert len(openai_server.requests) == 2


@pytest.mark.parametrize("first", ["plain", "stream"])
def test_an_answer_missing_the_logprobs_it_was_asked_for_is_not_stored(
    gateway_server, world, openai_server, first
):
    # An upstream that ignores `logprobs`: the answer is served as it came, never stored, so
    # the next request for them is asked upstream again (and gets them).
    openai_server.script(ok("Paris.", logprobs=False), ok("Paris."))
    client = sdk(gateway_server, world)
    if first == "plain":
        assert ask(client, temperature=0, logprobs=True)[0].choices[0].logprobs is None
    else:
        assert streamed_logprobs(ask_streamed(client, temperature=0, logprobs=True)[0]) == []
    plain, status = ask(client, temperature=0, logprobs=True)
    assert status == "miss"
    assert [t.token for t in plain.choices[0].logprobs.content] == ["Paris."]
    assert ask(client, temperature=0, logprobs=True)[1] == "hit"  # this one was whole
    assert len(openai_server.requests) == 2


def test_a_stream_of_several_choices_is_stored_as_several_choices():
    acc = Accumulator()
    for index, word in ((0, "Paris"), (1, "Lyon"), (0, "."), (1, "!")):
        acc.add({"id": "c1", "service_tier": "default", "choices": [
            {"index": index, "delta": {"content": word}, "finish_reason": None,
             "logprobs": {"content": [{"token": word, "logprob": -1.0}], "refusal": None}},
        ]})  # fmt: skip
    acc.add({"choices": [{"index": i, "delta": {}, "finish_reason": "stop"} for i in (0, 1)]})
    body = acc.completion(Usage(3, 4))
    assert [c["message"]["content"] for c in body["choices"]] == ["Paris.", "Lyon!"]
    assert [len(c["logprobs"]["content"]) for c in body["choices"]] == [2, 2]
    assert body["service_tier"] == "default"
    assert cacheable(body, {"n": 2, "logprobs": True})
    answer = CachedAnswer.loads(CachedAnswer(body, Usage(3, 4), "m", "p").dumps())
    assert answer.body == body


# Sampled answers: a per-feature choice


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_sampled_answers_are_cached_by_default(gateway_server, world, openai_server, temperature):
    client = sdk(gateway_server, world)
    params = {} if temperature is None else {"temperature": temperature}
    assert ask(client, **params)[1] == "miss"
    assert ask(client, **params)[1] == "hit"  # regenerate returns the same text
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_a_feature_may_keep_sampled_answers_out_of_the_cache(
    gateway_server, world, openai_server, temperature
):
    openai_server.script(ok("Paris."), ok("Paris, of course."))
    client = sdk(gateway_server, world, feature="fresh")
    params = {} if temperature is None else {"temperature": temperature}
    first, status = ask(client, **params)
    assert status == "bypass"
    again, status = ask(client, **params)
    assert status == "bypass"
    assert again.choices[0].message.content != first.choices[0].message.content
    # Temperature 0 answers are still cached for it.
    assert ask(client, temperature=0)[1] == "miss"
    assert ask(client, temperature=0)[1] == "hit"
    assert len(openai_server.requests) == 3


def test_the_admin_shows_the_choice_with_what_it_means(world, settings, django_user_model):
    settings.SECURE_SSL_REDIRECT = False
    user = django_user_model.objects.create_superuser("root", "root@example.com", None)
    client = Client()
    client.force_login(user)
    feature = Feature.objects.get(name="fresh")
    page = client.get(f"/admin/gateway/feature/{feature.pk}/change/").content.decode()
    assert "Cache sampled answers (regenerate returns the same text)" in page
    assert "regenerate gets a new answer" in page  # the help text


def test_the_yaml_sets_and_exports_the_choice():
    import_config(
        {
            "teams": [
                {"name": "acme", "features": ["chatbot", {"name": "fresh", "cache_sampled": False}]}
            ]
        }
    )
    assert Feature.objects.get(name="chatbot").cache_sampled is True
    assert Feature.objects.get(name="fresh").cache_sampled is False
    (team,) = export_config()["teams"]
    assert {"name": "fresh", "cache_sampled": False} in team["features"]
