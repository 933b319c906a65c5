"""The registry: one adapter class per Provider kind, no branching on the kind."""

from __future__ import annotations

import httpx
import pytest

from gateway.models import Provider
from gateway.providers import ADAPTERS, adapter_for
from gateway.providers.base import ProviderAdapter, ProviderError
from tests.providers.support import config


def test_every_provider_kind_an_admin_can_choose_has_an_adapter():
    assert set(ADAPTERS) == set(Provider.Kind.values)
    assert all(
        issubclass(cls, ProviderAdapter) and cls.kind == kind for kind, cls in ADAPTERS.items()
    )


@pytest.mark.parametrize("kind", sorted(Provider.Kind.values))
def test_adapter_for_builds_the_registered_class_with_the_given_client(kind):
    client = httpx.AsyncClient(verify=False)
    adapter = adapter_for(config(kind), client)
    assert type(adapter) is ADAPTERS[kind]
    assert adapter.client is client


def test_an_unknown_kind_is_a_retryable_provider_error():
    with pytest.raises(ProviderError) as caught:
        adapter_for(config("carrier-pigeon"), httpx.AsyncClient(verify=False))
    assert (caught.value.retryable, caught.value.kind) == (True, "provider_error")


def test_the_secret_is_not_in_the_config_repr():
    assert "sk-" not in repr(config("openai"))
