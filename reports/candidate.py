"""A what-if candidate policy: routing rules (as in the configuration file), and optionally
a baseline, price overrides, feature priorities and token ratios; read from YAML (the
`whatif` command's file, the what-if page's text box). reports/whatif.py replays it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from gateway.models import LanguageModel, RouteRule
from gateway.money import Prices
from gateway.pricehistory import BaselineSnap, PriceHistory

PRIORITIES = ("low", "medium", "high")
SINCE_CHOICES = ("7d", "30d", "90d")


class CandidateError(ValueError):
    """A candidate policy that cannot be replayed; the message names the key."""


def candidate_from_text(text: str) -> Candidate:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CandidateError(f"not valid YAML: {exc}") from None
    return candidate_from_data(data)


def current_policy_text() -> str:
    """The admin's routes and the global baseline, as a candidate to edit."""
    data: dict[str, Any] = {
        "routes": [
            {
                "name": r.name,
                **({"priority": r.priority} if r.priority else {}),
                **({"max_prompt_tokens": r.max_prompt_tokens} if r.max_prompt_tokens else {}),
                **({"max_output_tokens": r.max_output_tokens} if r.max_output_tokens else {}),
                "chain": list(r.chain),
            }
            for r in current_rules()
        ]
    }
    baseline = PriceHistory.load().baseline(None)
    if baseline is not None:
        data["baseline"] = {"model": baseline.model, "cache": baseline.cache}
    data["priorities"] = {}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


@dataclass(frozen=True)
class Rule:
    name: str
    chain: tuple[str, ...]
    priority: str = ""
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass
class Candidate:
    rules: list[Rule]
    baseline: BaselineSnap | None = None  # None: each team's configured baseline
    prices: dict[str, Prices] = field(default_factory=dict)  # overrides, every day
    priorities: dict[str, str] = field(default_factory=dict)  # "team/feature" or "team"
    token_ratios: dict[str, Decimal] = field(default_factory=dict)  # provider name or kind


def current_rules() -> list[Rule]:
    """The admin's enabled routes, in order: the policy in force."""
    rules = RouteRule.objects.filter(enabled=True).prefetch_related("steps__model")
    return [
        Rule(
            r.name,
            tuple(s.model.name for s in r.steps.all()),
            r.priority,
            r.max_prompt_tokens,
            r.max_output_tokens,
        )
        for r in rules
    ]


def candidate_from_data(data: Any) -> Candidate:
    """A candidate from parsed YAML: routes (as in the configuration file), and optionally
    baseline, models (price overrides), priorities and token_ratios."""
    if not isinstance(data, dict):
        raise CandidateError("the candidate must be a mapping with at least `routes`")
    unknown = sorted(set(data) - {"routes", "baseline", "models", "priorities", "token_ratios"})
    if unknown:
        raise CandidateError(f"unknown key(s) {unknown}")
    known = set(LanguageModel.objects.values_list("name", flat=True))
    rules = [_rule(entry, i, known) for i, entry in enumerate(data.get("routes") or [])]
    if not rules:
        raise CandidateError("routes: name at least one rule, e.g. {name: all, chain: [gpt-4o]}")
    candidate = Candidate(rules=rules)
    if data.get("baseline") is not None:
        b = data["baseline"]
        if not isinstance(b, dict) or b.get("model") not in known:
            raise CandidateError("baseline: expected {model: <a known model>, cache: false}")
        candidate.baseline = BaselineSnap(b["model"], bool(b.get("cache", False)))
    for i, m in enumerate(data.get("models") or []):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise CandidateError(f"models[{i}]: expected {{name, input_per_mtok, output_per_mtok}}")
        candidate.prices[m["name"]] = Prices(
            _usd(m.get("input_per_mtok"), f"models[{i}].input_per_mtok"),
            _usd(m.get("output_per_mtok"), f"models[{i}].output_per_mtok"),
            _usd(m.get("cached_input_per_mtok"), f"models[{i}].cached_input_per_mtok", True),
        )
    for who, priority in (data.get("priorities") or {}).items():
        if priority not in PRIORITIES:
            raise CandidateError(f"priorities.{who}: expected one of {', '.join(PRIORITIES)}")
        candidate.priorities[str(who)] = priority
    for who, ratio in (data.get("token_ratios") or {}).items():
        value = _usd(ratio, f"token_ratios.{who}")
        if not value:
            raise CandidateError(f"token_ratios.{who}: expected a number > 0")
        candidate.token_ratios[str(who)] = value
    return candidate


def _rule(entry: Any, i: int, known: set[str]) -> Rule:
    where = f"routes[{i}]"
    if not isinstance(entry, dict) or not entry.get("chain"):
        raise CandidateError(f"{where}: expected {{name, chain: [models], priority, ...}}")
    chain = entry["chain"]
    if not isinstance(chain, list) or any(m not in known for m in chain):
        raise CandidateError(f"{where}.chain: unknown model(s) in {chain!r}")
    priority = entry.get("priority") or ""
    if priority and priority not in PRIORITIES:
        raise CandidateError(f"{where}.priority: expected one of {', '.join(PRIORITIES)}")
    limits = [entry.get(k) for k in ("max_prompt_tokens", "max_output_tokens")]
    if any(v is not None and (not isinstance(v, int) or v < 0) for v in limits):
        raise CandidateError(f"{where}: token limits must be whole numbers")
    return Rule(str(entry.get("name") or where), tuple(chain), priority, *limits)


def _usd(value: Any, where: str, optional: bool = False) -> Decimal | None:
    if value is None and optional:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise CandidateError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise CandidateError(f"{where}: {value!r} is not a number ≥ 0")
    return amount
