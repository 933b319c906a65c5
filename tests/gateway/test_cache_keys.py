"""Response-cache keys and TTLs: the same meaning shares a key, any other difference does not."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import cache, runtime
from gateway.cache import MAX_TTL_S, PREFIX, CachedAnswer, cacheable, key_for, ttl_for
from gateway.providers.base import Usage
from gateway.roundtrip import RoundTrip
from gateway.snapshot import FeatureSnap, TeamSnap
from tests.processes import one_redis_only

CHAIN = ("gpt-4o-mini", "claude-haiku")
# Keys are cheap to compute but there are many properties: a few dozen examples each.
# No deadline nor speed health check: they only measure how busy the machine is.
some = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def team(team_id: int = 1, cache_scope: str = "team") -> TeamSnap:
    return TeamSnap(
        id=team_id, name=f"t{team_id}", timezone="UTC", cache_scope=cache_scope,
        budget_fail_open=False, store_content=False, rpm_limit=None, tpm_limit=None,
        features={}, budgets=(),
    )  # fmt: skip


def key(body, *, chain=CHAIN, scope_team=None) -> str:
    return key_for(team=scope_team or team(), body=body, chain=chain)


texts = st.text(max_size=40)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": texts}
    ),
    min_size=1,
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {"model": st.just("gpt-4o-mini"), "messages": messages},
    optional={
        "temperature": st.sampled_from([0, 0.2, 0.7, 1.5]),
        "max_tokens": st.integers(1, 4096),
        "seed": st.integers(0, 10**6),
        "stop": st.sampled_from(["\n", ["END", "STOP"]]),
    },
)


def reversed_keys(value):
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


# --- Same meaning, same key -------------------------------------------------------------------


@some
@given(bodies)
def test_key_order_does_not_change_the_key(body):
    assert key(reversed_keys(body)) == key(body)


@some
@given(bodies)
def test_a_single_text_part_shares_the_key_of_a_plain_string(body):
    parts = copy.deepcopy(body)
    for m in parts["messages"]:
        m["content"] = [{"type": "text", "text": m["content"]}]
    assert key(parts) == key(body)


@some
@given(bodies, st.sets(st.sampled_from(sorted(cache.DEFAULTS)), min_size=1))
def test_parameters_sent_at_their_default_share_the_key_of_absent_ones(body, names):
    body.pop("temperature", None)
    explicit = {**body, **{name: cache.DEFAULTS[name] for name in names}}
    assert key(explicit) == key(body)


def test_default_values_are_recognised_whatever_the_number_type():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert key({**body, "temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0}) == key(body)


@some
@given(bodies, st.integers(1, 10_000))
def test_max_tokens_under_either_name_shares_the_key(body, limit):
    body.pop("max_tokens", None)
    assert key({**body, "max_completion_tokens": limit}) == key({**body, "max_tokens": limit})


@some
@given(
    bodies,
    st.fixed_dictionaries(
        {},
        optional={
            "stream": st.booleans(),
            "stream_options": st.just({"include_usage": True}),
            "user": st.text(max_size=10),
            "metadata": st.just({"trace": "x"}),
        },
    ),
)
def test_streaming_switches_and_the_end_user_do_not_change_the_key(body, extra):
    assert key({**body, **extra}) == key(body)


def test_null_fields_and_the_model_name_do_not_change_the_key():
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi", "name": None}]}
    plain = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert key({**body, "seed": None}) == key(plain)


# --- Anything that can change the answer changes the key ---------------------------------------


@some
@given(bodies, st.data())
def test_another_message_text_gives_another_key(body, data):
    i = data.draw(st.integers(0, len(body["messages"]) - 1))
    text = data.draw(texts)
    assume(text != body["messages"][i]["content"])
    other = copy.deepcopy(body)
    other["messages"][i]["content"] = text
    assert key(other) != key(body)


@some
@given(bodies, st.data())
def test_another_role_gives_another_key(body, data):
    i = data.draw(st.integers(0, len(body["messages"]) - 1))
    role = data.draw(st.sampled_from(["system", "user", "assistant", "developer"]))
    assume(role != body["messages"][i]["role"])
    other = copy.deepcopy(body)
    other["messages"][i]["role"] = role
    assert key(other) != key(body)


def test_a_stop_string_and_a_list_of_it_share_a_key():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert key({**body, "stop": "END"}) == key({**body, "stop": ["END"]})


def test_an_integral_temperature_and_its_float_share_a_key():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert key({**body, "temperature": 2}) == key({**body, "temperature": 2.0})


def test_an_extra_message_gives_another_key():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    longer = {"messages": [*body["messages"], {"role": "assistant", "content": ""}]}
    assert key(longer) != key(body)


CHANGES = {
    "temperature": st.floats(0, 2, allow_nan=False),
    "top_p": st.floats(0, 1, allow_nan=False),
    "seed": st.integers(-(2**31), 2**31),
    "max_tokens": st.integers(1, 10**6),
    "stop": st.lists(st.text(max_size=5), max_size=4),
    "tools": st.lists(
        st.builds(lambda n: {"type": "function", "function": {"name": n}}, st.text(max_size=8)),
        max_size=2,
    ),
    "response_format": st.sampled_from(
        [{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "json_schema": {}}]
    ),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_another_value_of_a_parameter_gives_another_key(field):
    @settings(some, max_examples=25)
    @given(bodies, CHANGES[field], CHANGES[field])
    def check(body, a, b):
        assume(a != b)
        assert key({**body, field: a}) != key({**body, field: b})

    check()


def test_a_parameter_away_from_its_default_gives_another_key():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert key({**body, "temperature": 0}) != key(body)
    assert key({**body, "n": 1, "logprobs": True}) != key(body)


@some
@given(bodies)
def test_another_model_chain_gives_another_key(body):
    assert key(body, chain=("gpt-4o-mini",)) != key(body, chain=CHAIN)
    assert key(body, chain=tuple(reversed(CHAIN))) != key(body, chain=CHAIN)


@some
@given(bodies)
@one_redis_only
def test_teams_get_their_own_keys(body):
    mine, theirs = key(body, scope_team=team(1)), key(body, scope_team=team(2))
    assert mine != theirs
    assert mine.startswith(f"{PREFIX}t1:")


@some
@given(bodies)
def test_teams_in_the_shared_scope_share_keys(body):
    a = key(body, scope_team=team(1, cache_scope="shared"))
    assert a == key(body, scope_team=team(2, cache_scope="shared"))
    assert a.startswith(f"{PREFIX}shared:")
    assert a != key(body, scope_team=team(1))


# --- TTLs --------------------------------------------------------------------------------------

FEATURE = FeatureSnap(id=7, name="chatbot", default_cache_ttl=600)


def test_the_ttl_header_wins_over_the_feature_default():
    assert ttl_for(header="120", feature=FEATURE, default=3600) == 120
    assert ttl_for(header="0", feature=FEATURE, default=3600) == 0


def test_the_ttl_is_the_feature_default_without_a_header():
    assert ttl_for(header=None, feature=FEATURE, default=3600) == 600
    assert ttl_for(header="", feature=FEATURE, default=3600) == 600


def test_the_ttl_is_the_gateway_default_without_header_or_feature():
    assert ttl_for(header=None, feature=None, default=3600) == 3600


def test_the_ttl_header_is_capped_at_thirty_days():
    assert ttl_for(header=str(10**9), feature=None, default=3600) == MAX_TTL_S == 2_592_000


@pytest.mark.parametrize("header", ["abc", "1.5", "-1", "10s", " "])
def test_a_ttl_header_that_is_not_whole_seconds_raises_value_error(header):
    with pytest.raises(ValueError):
        ttl_for(header=header, feature=FEATURE, default=3600)


# --- Stored answers ----------------------------------------------------------------------------

ANSWER = CachedAnswer(
    body={
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hé ✓"},
                     "finish_reason": "stop"}],
    },
    usage=Usage(input_tokens=12, output_tokens=5, cached_tokens=3, cache_write_tokens=1,
                reported=False),
    model="gpt-4o-mini",
    provider="openai",
)  # fmt: skip


def test_a_cached_answer_survives_dumps_and_loads():
    assert CachedAnswer.loads(ANSWER.dumps()) == ANSWER


async def test_a_stored_answer_is_read_back_and_expires_with_its_ttl():
    redis = runtime.aredis()
    try:
        k = key({"messages": [{"role": "user", "content": "hi"}]})
        assert await redis.get(k) is None
        trip = RoundTrip(redis)
        cache.queue_put(trip, k, ANSWER, 90)
        await trip.send()
        assert CachedAnswer.loads(await redis.get(k)) == ANSWER
        assert 0 < await redis.ttl(k) <= 90
    finally:
        await runtime.close_loop_clients()


@pytest.mark.parametrize("reasons", [["stop"], ["length"], ["stop", "length"]])
def test_whole_answers_are_cacheable(reasons):
    assert cacheable({"choices": [{"finish_reason": r} for r in reasons]})


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"finish_reason": "tool_calls"}]},
        {"choices": [{"finish_reason": "stop"}, {"finish_reason": "content_filter"}]},
        {"choices": [{"finish_reason": None}]},
        {"choices": []},
        {"error": {"message": "x"}},
    ],
)
def test_tool_calls_errors_and_empty_answers_are_not_cacheable(body):
    assert not cacheable(body)
