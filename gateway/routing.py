"""Which models may serve a request, in order.

A named model is tried first, then its fallback list. `auto` (or no model) follows the
routing rules: the first enabled rule whose priority and size limits match gives the chain.
Models whose context window cannot hold the prompt are skipped.
"""

from __future__ import annotations

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.snapshot import ModelSnap, RouteSnap, Snapshot

AUTO = "auto"


def rule_matches(
    rule: RouteSnap, *, priority: str, prompt_tokens: int, max_tokens: int | None
) -> bool:
    if rule.priority and rule.priority != priority:
        return False
    if rule.max_prompt_tokens is not None and prompt_tokens > rule.max_prompt_tokens:
        return False
    if rule.max_output_tokens is not None and (
        max_tokens is None or max_tokens > rule.max_output_tokens
    ):
        return False
    return True


def chain_for(
    snapshot: Snapshot, *, model: str, priority: str, prompt_tokens: int, max_tokens: int | None
) -> tuple[tuple[str, ...], RouteSnap | None]:
    """The chain's model names, and the routing rule that gave it (None for a named model)."""
    if model != AUTO:
        if model not in snapshot.models:
            raise ModelNotFound(
                f"The model '{model}' does not exist or is not enabled.", param="model"
            )
        return snapshot.models[model].chain_names, None
    for rule in snapshot.routes:
        if rule_matches(
            rule, priority=priority, prompt_tokens=prompt_tokens, max_tokens=max_tokens
        ):
            return rule.chain, rule
    raise ModelNotFound("No routing rule matches this request; name a model.", param="model")


def chain_names(
    snapshot: Snapshot, *, model: str, priority: str, prompt_tokens: int, max_tokens: int | None
) -> tuple[str, ...]:
    return chain_for(
        snapshot, model=model, priority=priority, prompt_tokens=prompt_tokens, max_tokens=max_tokens
    )[0]


def resolve_chain(
    snapshot: Snapshot,
    *,
    model: str,
    priority: str,
    prompt_tokens: int,
    max_tokens: int | None,
    names: tuple[str, ...] | None = None,
    max_tokens_param: str | None = None,
) -> list[ModelSnap]:
    """The models to try, in order, each at most once, all able to hold the prompt.
    `names`: the chain `chain_for` gave, when the caller already has it.

    A max_tokens beyond every model's max output is refused, naming the largest limit
    (`max_tokens_param`: the name the client used, max_tokens by default)."""
    if names is None:
        names = chain_names(
            snapshot,
            model=model,
            priority=priority,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
        )
    seen: set[str] = set()
    chain: list[ModelSnap] = []
    for name in names:
        m = snapshot.models.get(name)
        if m is None or name in seen:
            continue
        seen.add(name)
        chain.append(m)
    if not chain:
        raise ModelNotFound(f"No enabled model can serve '{model}'.", param="model")
    largest = max(chain, key=lambda m: m.max_output_tokens)
    if max_tokens and max_tokens > largest.max_output_tokens:
        param = max_tokens_param or "max_tokens"
        raise InvalidRequest(
            f"'{param}' is {max_tokens}, more than model {largest.name} can produce: its "
            f"limit is {largest.max_output_tokens} output tokens.",
            param=param,
        )
    fitting = [m for m in chain if prompt_tokens + (max_tokens or 0) <= m.context_window]
    if not fitting:
        widest = max(m.context_window for m in chain)
        raise InvalidRequest(
            f"The prompt (about {prompt_tokens} tokens) plus max_tokens does not fit the context "
            f"window of any model in the chain (largest: {widest} tokens).",
            param="messages",
            code="context_length_exceeded",
        )
    return fitting
