"""The registry: one adapter class per Provider kind, no branching on the kind."""

from __future__ import annotations

import httpx
import pytest

from gateway.providers import ADAPTERS, adapter_for, kind_choices
from gateway.providers.base import ProviderAdapter, ProviderError
from tests.providers.support import config


def test_every_provider_kind_an_admin_can_choose_has_an_adapter():
    assert set(ADAPTERS) == {kind for kind, _ in kind_choices()}
    assert all(
        issubclass(cls, ProviderAdapter) and cls.kind == kind for kind, cls in ADAPTERS.items()
    )


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
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


class CarrierPigeonAdapter(ProviderAdapter):
    kind = "carrier_pigeon"
    label = "Carrier pigeon"

    async def complete(self, request):  # pragma: no cover - never called here
        raise NotImplementedError

    async def stream(self, request, result):  # pragma: no cover - never called here
        raise NotImplementedError
        yield


@pytest.mark.django_db
def test_a_new_adapter_is_a_kind_in_the_admin_and_the_yaml_without_a_migration(monkeypatch):
    from django.core.management import call_command

    from gateway.configfile.fields import PROVIDER_FIELDS
    from gateway.models import Provider

    monkeypatch.setitem(ADAPTERS, CarrierPigeonAdapter.kind, CarrierPigeonAdapter)
    provider = Provider(name="pigeon", kind="carrier_pigeon", base_url="https://coop.test/v1")
    provider.full_clean()  # raises if the kind is not a valid choice
    assert ("carrier_pigeon", "Carrier pigeon") in Provider._meta.get_field("kind").choices
    (kind_field,) = [f for f in PROVIDER_FIELDS if f.key == "kind"]
    assert kind_field.parse("carrier_pigeon", "providers.pigeon.kind") == "carrier_pigeon"
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # no migration needed
