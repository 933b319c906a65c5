"""Record factories: plain functions with sensible defaults, overridable by keyword."""

from __future__ import annotations

from decimal import Decimal

from budgets.models import Budget
from gateway.models import (
    ApiKey,
    Fallback,
    Feature,
    LanguageModel,
    Provider,
    RouteRule,
    RouteStep,
    Team,
)


def make_team(name: str = "acme", **kw) -> Team:
    return Team.objects.create(name=name, **kw)


def make_feature(team: Team, name: str = "chatbot", **kw) -> Feature:
    return Feature.objects.create(team=team, name=name, **kw)


def make_key(team: Team, feature: Feature | None = None, **kw) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret (shown once)."""
    key = ApiKey(team=team, feature=feature, **kw)
    secret = key.set_new_secret()
    key.save()
    return key, secret


def make_provider(name: str = "sim", kind: str = "simulated", base_url: str = "", **kw) -> Provider:
    kw.setdefault("options", {"latency_ms": 0})
    return Provider.objects.create(name=name, kind=kind, base_url=base_url, **kw)


def make_loopback_providers(
    openai_server, anthropic_server, monkeypatch, **openai_kw
) -> tuple[Provider, Provider]:
    """The `openai` and `anthropic` providers on the loopback servers, their keys set in the
    environment under names the operator allowlist accepts (`*_API_KEY`)."""
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test-openai-secret")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant-test-secret")
    openai_kw.setdefault("options", {})
    oa = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        **openai_kw,
    )
    an = make_provider(
        "anthropic",
        kind="anthropic",
        base_url=anthropic_server.base_url,
        api_key_env="TEST_ANTHROPIC_API_KEY",
        options={},
    )
    return oa, an


def make_model(
    name: str, provider: Provider, *, input_price="1", output_price="2", **kw
) -> LanguageModel:
    kw.setdefault("upstream_id", name)
    return LanguageModel.objects.create(
        name=name,
        provider=provider,
        input_per_mtok=Decimal(input_price) if input_price is not None else None,
        output_per_mtok=Decimal(output_price) if output_price is not None else None,
        **kw,
    )


def set_fallbacks(model: LanguageModel, *targets: LanguageModel) -> None:
    Fallback.objects.filter(model=model).delete()
    for i, target in enumerate(targets):
        Fallback.objects.create(model=model, target=target, position=i)


def make_route(name: str, chain: list[LanguageModel], *, position: int = 0, **kw) -> RouteRule:
    rule = RouteRule.objects.create(name=name, position=position, **kw)
    for i, model in enumerate(chain):
        RouteStep.objects.create(rule=rule, model=model, position=i)
    return rule


def make_budget(team: Team, feature: Feature | None = None, **kw) -> Budget:
    kw.setdefault("scope", Budget.Scope.FEATURE if feature else Budget.Scope.TEAM)
    for field in ("daily_limit_usd", "monthly_limit_usd"):
        if field in kw and kw[field] is not None:
            kw[field] = Decimal(str(kw[field]))
    return Budget.objects.create(team=team, feature=feature, **kw)
