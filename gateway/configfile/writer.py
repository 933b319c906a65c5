"""Export the configuration in the format `reader` imports. Secrets are never in it: a
provider is exported with the name of the environment variable that holds its key, and API
keys (only hashes are stored) are not exported at all."""

from __future__ import annotations

from typing import Any

import yaml

from budgets.models import Budget
from gateway.configfile.fields import (
    BUDGET_FIELDS,
    FEATURE_FIELDS,
    MODEL_FIELDS,
    PROVIDER_FIELDS,
    ROUTE_FIELDS,
    TEAM_FIELDS,
    dump_fields,
)
from gateway.models import Baseline, LanguageModel, Provider, RouteRule, Team

HEADER = (
    "# LLM gateway configuration (python manage.py importconfig FILE).\n"
    "# Prices are USD per million tokens. Secrets are not stored here: each provider names\n"
    "# the environment variable that holds its key.\n"
)


def export_config() -> dict[str, Any]:
    """Every provider, model, route, team (with its features and budgets) as plain data."""
    return {
        "providers": [
            {"name": p.name, **dump_fields(p, PROVIDER_FIELDS)} for p in Provider.objects.all()
        ],
        "models": [
            _model(m)
            for m in LanguageModel.objects.select_related("provider").prefetch_related(
                "fallback_links__target"
            )
        ],
        "routes": [_route(r) for r in RouteRule.objects.prefetch_related("steps__model")],
        **({"baseline": _baseline(b)} if (b := _baseline_of(None)) else {}),
        "teams": [_team(t) for t in Team.objects.prefetch_related("features", "budgets__feature")],
    }


def _baseline_of(team: Team | None) -> Baseline | None:
    return Baseline.objects.select_related("model").filter(team=team).first()


def _baseline(b: Baseline) -> dict[str, Any]:
    return {"model": b.model.name, "cache": b.cache}


def dump_config(data: dict[str, Any]) -> str:
    """YAML text: block style, with short lists of names and numbers on one line."""
    return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _model(m: LanguageModel) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.name, "provider": m.provider.name}
    if m.upstream_id != m.name:
        out["upstream"] = m.upstream_id
    out.update(dump_fields(m, MODEL_FIELDS))
    fallbacks = [link.target.name for link in m.fallback_links.all()]
    if fallbacks:
        out["fallbacks"] = fallbacks
    return out


def _route(r: RouteRule) -> dict[str, Any]:
    return {
        "name": r.name,
        **dump_fields(r, ROUTE_FIELDS),
        "chain": [s.model.name for s in r.steps.all()],
    }


def _team(t: Team) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, **dump_fields(t, TEAM_FIELDS)}
    features = []
    for f in t.features.all():
        extra = dump_fields(f, FEATURE_FIELDS)
        features.append({"name": f.name, **extra} if extra else f.name)
    if features:
        out["features"] = features
    budgets = sorted(t.budgets.all(), key=lambda b: (b.feature_id is not None, b.id))
    if budgets:
        out["budgets"] = [_budget(b) for b in budgets]
    baseline = _baseline_of(t)
    if baseline is not None:
        out["baseline"] = _baseline(baseline)
    return out


def _budget(b: Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if b.scope == Budget.Scope.FEATURE and b.feature is not None:
        out["feature"] = b.feature.name
    out.update(dump_fields(b, BUDGET_FIELDS))
    return out


class _Dumper(yaml.SafeDumper):
    def represent_list(self, data: Any) -> yaml.SequenceNode:
        flat = all(isinstance(v, str | int | float) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _Dumper.represent_list)
