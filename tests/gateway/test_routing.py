"""Which models serve a request: a named model and its fallbacks, or the first matching rule,
minus the models whose context window cannot hold the prompt."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.money import Prices
from gateway.providers.base import ProviderConfig
from gateway.routing import resolve_chain
from gateway.snapshot import ModelSnap, RouteSnap, Snapshot

SIM = ProviderConfig(name="sim", kind="simulated", base_url="", api_key="")


def model(
    name: str, *, fallbacks: tuple[str, ...] = (), context_window: int = 128_000
) -> ModelSnap:
    return ModelSnap(
        id=abs(hash(name)) % 10_000, name=name, upstream_id=name, provider=SIM,
        prices=Prices(Decimal("1"), Decimal("2")), context_window=context_window,
        max_output_tokens=4096, fallbacks=fallbacks,
    )  # fmt: skip


def route(name, chain, *, priority="", max_prompt_tokens=None, max_output_tokens=None):
    return RouteSnap(
        name=name, priority=priority, max_prompt_tokens=max_prompt_tokens,
        max_output_tokens=max_output_tokens, chain=tuple(chain),
    )  # fmt: skip


def snapshot(*models: ModelSnap, routes: tuple[RouteSnap, ...] = ()) -> Snapshot:
    return Snapshot(teams={}, models={m.name: m for m in models}, routes=routes)


MODELS = (
    model("big", fallbacks=("mid", "small"), context_window=200_000),
    model("mid", fallbacks=("small",), context_window=32_000),
    model("small", context_window=8_000),
    model("cheap", context_window=16_000),
)
ROUTES = (
    route("batch", ["small", "mid"], priority="low"),
    route("urgent", ["big", "mid"], priority="high"),
    route("tiny", ["cheap", "small"], max_prompt_tokens=1000, max_output_tokens=500),
    route("default", ["mid", "big"]),
)
SNAP = snapshot(*MODELS, routes=ROUTES)


def names(snap=SNAP, *, model="auto", priority="normal", prompt_tokens=100, max_tokens=None):
    chain = resolve_chain(
        snap, model=model, priority=priority, prompt_tokens=prompt_tokens, max_tokens=max_tokens
    )
    return [m.name for m in chain]


def test_a_named_model_comes_first_then_its_fallbacks_in_order():
    assert names(model="big") == ["big", "mid", "small"]


def test_a_model_without_fallbacks_is_a_chain_of_one():
    assert names(model="cheap") == ["cheap"]


def test_a_fallback_that_is_disabled_or_repeated_is_left_out():
    snap = snapshot(model("a", fallbacks=("a", "gone", "b", "b")), model("b"))
    assert names(snap, model="a") == ["a", "b"]


def test_an_unknown_model_is_a_404():
    with pytest.raises(ModelNotFound) as info:
        names(model="gpt-9")
    assert info.value.status == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert "gpt-9" in info.value.message


def test_auto_with_low_priority_follows_the_low_priority_rule():
    assert names(priority="low") == ["small", "mid"]


def test_auto_with_high_priority_follows_the_high_priority_rule():
    assert names(priority="high") == ["big", "mid"]


def test_auto_with_a_small_prompt_and_small_max_tokens_goes_to_the_cheap_rule():
    assert names(prompt_tokens=900, max_tokens=500) == ["cheap", "small"]


def test_a_size_limited_rule_is_passed_over_when_max_tokens_is_unset_or_too_big():
    assert names(prompt_tokens=900) == ["mid", "big"]
    assert names(prompt_tokens=900, max_tokens=501) == ["mid", "big"]
    assert names(prompt_tokens=1001, max_tokens=100) == ["mid", "big"]


def test_the_first_matching_rule_wins():
    snap = snapshot(*MODELS, routes=(route("first", ["cheap"]), route("second", ["big"])))
    assert names(snap) == ["cheap"]


def test_auto_with_no_matching_rule_is_a_404():
    snap = snapshot(*MODELS, routes=(route("batch", ["small"], priority="low"),))
    with pytest.raises(ModelNotFound) as info:
        names(snap, priority="high")
    assert info.value.status == 404


def test_a_rule_whose_models_are_all_disabled_is_a_404():
    snap = snapshot(*MODELS, routes=(route("gone", ["retired-1", "retired-2"]),))
    with pytest.raises(ModelNotFound, match="No enabled model"):
        names(snap)


def test_models_whose_context_window_is_too_small_are_skipped():
    # 24,000 tokens fit big (200k) and mid (32k), not small (8k); 34,000 only fit big.
    assert names(model="big", prompt_tokens=20_000, max_tokens=4_000) == ["big", "mid"]
    assert names(model="big", prompt_tokens=30_000, max_tokens=4_000) == ["big"]


def test_the_context_check_counts_max_tokens_with_the_prompt():
    assert names(model="small", prompt_tokens=7_000) == ["small"]
    with pytest.raises(InvalidRequest):
        names(model="small", prompt_tokens=7_000, max_tokens=1_001)


def test_a_prompt_that_fits_no_model_is_context_length_exceeded():
    with pytest.raises(InvalidRequest) as info:
        names(model="mid", prompt_tokens=40_000)
    err = info.value
    assert err.status == 400
    assert err.code == "context_length_exceeded"
    assert err.param == "messages"
    assert "largest: 32000 tokens" in err.message
