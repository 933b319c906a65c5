"""The founding scenario's shape (../shared/seed/): four models at its prices, its routing
policy (the route named `default` starts with gpt-4o-mini), 8 features in 4 teams, FAQ-like
repeats served from the cache, an outage of gpt-4o rescued by fallbacks, refusals and
failures. Ledger rows are written as the drainer writes them, each priced with
gateway.money at its served model's price, so that the tests can count independently."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from django.utils import timezone

from gateway.money import Prices, cost_of
from gateway.providers.base import Usage
from tests.factories import make_feature, make_model, make_provider, make_route, make_team
from tests.reports.conftest import make_record, write_ledger

PRICES = {  # USD per million tokens (the scenario's per-1k prices × 1000)
    "gpt-4o": ("2.5", "10"),
    "gpt-4o-mini": ("0.15", "0.6"),
    "claude-sonnet": ("3", "15"),
    "claude-haiku": ("0.8", "4"),
}
ROUTES = {  # name -> (priority, chain), first match wins
    "low": ("low", ["gpt-4o-mini", "claude-haiku"]),
    "high": ("high", ["gpt-4o", "claude-sonnet", "gpt-4o-mini"]),
    "default": ("", ["gpt-4o-mini", "gpt-4o", "claude-sonnet"]),
}
TEAMS = {
    "chat": ["chatbot", "search"],
    "content": ["summarization", "translation"],
    "platform": ["moderation", "classification"],
    "data": ["code-generation", "search"],  # a second `search`, in another team
}


def prices(name: str) -> Prices:
    i, o = PRICES[name]
    return Prices(Decimal(i), Decimal(o))


def make_scenario_config() -> dict:
    openai, anthropic = make_provider("openai-sim"), make_provider("anthropic-sim")
    models = {
        name: make_model(
            name, openai if name.startswith("gpt") else anthropic, input_price=i, output_price=o
        )
        for name, (i, o) in PRICES.items()
    }
    for position, (name, (priority, chain)) in enumerate(ROUTES.items()):
        make_route(name, [models[m] for m in chain], priority=priority, position=position)
    features = {}
    for team_name, names in TEAMS.items():
        team = make_team(team_name)
        for name in names:
            features[(team_name, name)] = make_feature(team, name)
    return {"models": models, "features": features}


def scenario_records(features: dict, *, n: int = 400, seed: int = 20) -> list:
    """`n` requests this month (never before its first instant), deterministic."""
    rng = random.Random(seed)
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    keys = sorted(features)
    answered: list[tuple] = []  # (feature, served, usage) of earlier answers, for cache hits
    records = []
    for i in range(n):
        created = max(now - dt.timedelta(minutes=n - i), month_start)
        team_name, feature_name = keys[i % len(keys)]
        feature = features[(team_name, feature_name)]
        common = {"created_at": created, "requested_model": "auto"}
        roll = rng.random()
        if roll < 0.04:
            records.append(
                make_record(
                    feature.team,
                    feature,
                    status="refused",
                    served_model="",
                    input_tokens=0,
                    output_tokens=0,
                    **common,
                )
            )
            continue
        if roll < 0.34 and answered:
            _, served, usage = rng.choice(answered)
            records.append(
                make_record(
                    feature.team,
                    feature,
                    served_model=served,
                    cache="hit",
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    saved_usd=cost_of(usage, prices(served)).usd,
                    **common,
                )
            )
            continue
        priority = rng.choice(["low", "medium", "medium", "high"])
        chain = next(c for p, c in ROUTES.values() if p in ("", priority))
        usage = Usage(rng.randint(50, 3000), rng.randint(20, 1200))
        outage = chain[0] == "gpt-4o" and i % 5 == 0  # the OpenAI outage: a fallback
        if roll > 0.98:
            records.append(
                make_record(
                    feature.team,
                    feature,
                    status="error",
                    served_model="",
                    attempts=len(chain),
                    input_tokens=0,
                    output_tokens=0,
                    **common,
                )
            )
            continue
        served = chain[1] if outage else chain[0]
        attempt_log = [{"model": m} for m in chain[: chain.index(served) + 1]]
        records.append(
            make_record(
                feature.team,
                feature,
                served_model=served,
                attempts=len(attempt_log),
                attempt_log=attempt_log,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=cost_of(usage, prices(served)).usd,
                **common,
            )
        )
        answered.append((feature, served, usage))
    return write_ledger(records)


def independent_count(records: list, baseline: str = "gpt-4o") -> dict[str, Decimal]:
    """The savings counted request by request, straight from the ledger rows."""
    spend = sum((r.cost_usd for r in records), Decimal(0))
    routing = cache = fallback = Decimal(0)
    for r in records:
        usage = Usage(r.input_tokens, r.output_tokens)
        at_baseline = cost_of(usage, prices(baseline)).usd
        if r.cache == "hit":
            cache += at_baseline
        elif r.status == "ok":
            routing += at_baseline - r.cost_usd
            if r.attempts > 1:
                fallback += r.cost_usd - cost_of(usage, prices(r.attempt_log[0]["model"])).usd
    return {
        "spend": spend,
        "routing": routing,
        "cache": cache,
        "fallback": fallback,
        "total": routing + cache,
        "baseline": spend + routing + cache,
    }
