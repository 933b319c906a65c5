"""Provider adapters, looked up by the Provider's `kind`.

Adding a provider = one module, one line in `ADAPTERS`, and its wire fixtures in the
parametrized contract suite (tests/providers/test_contract.py). The admin's and the YAML's
list of kinds is read from `ADAPTERS` (`kind_choices`), so a new kind needs no migration.
"""

from __future__ import annotations

import httpx

from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import ProviderAdapter, ProviderConfig, ProviderError
from gateway.providers.openai import OpenAIAdapter
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from gateway.providers.simulated import SimulatedAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    OpenAIAdapter.kind: OpenAIAdapter,
    AnthropicAdapter.kind: AnthropicAdapter,
    OpenAICompatibleAdapter.kind: OpenAICompatibleAdapter,
    SimulatedAdapter.kind: SimulatedAdapter,
}


def kind_choices() -> list[tuple[str, str]]:
    """The Provider kinds an admin can choose: Django's callable `choices`, read when a form
    or a check runs, so a kind added here reaches the admin without a migration."""
    return [(kind, cls.label) for kind, cls in ADAPTERS.items()]


def adapter_for(config: ProviderConfig, client: httpx.AsyncClient) -> ProviderAdapter:
    """The adapter for a provider; the client is the process's pooled one (tests: a mock)."""
    cls = ADAPTERS.get(config.kind)
    if cls is None:
        raise ProviderError(
            f"{config.name}: unknown provider kind {config.kind!r}",
            retryable=True,
            kind="provider_error",
        )
    return cls(config, client)
