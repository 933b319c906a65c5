"""The admin pages an operator uses: they load, keys show their secret once, the ledger is
read-only, and no secret is ever rendered."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway.models import ApiKey, Provider, UsageRecord
from tests.factories import make_feature, make_key, make_team

pytestmark = pytest.mark.django_db

GATEWAY_MODELS = (
    "team",
    "feature",
    "apikey",
    "provider",
    "languagemodel",
    "routerule",
    "usagerecord",
    "deadletter",
    "baseline",
    "modelprice",
)
READ_ONLY = (
    "usagerecord",
    "deadletter",
    "modelprice",
)  # no add page; the demo makes no dead letter


@pytest.fixture
def staff(django_user_model, settings) -> Client:
    settings.SECURE_SSL_REDIRECT = False  # production settings redirect plain HTTP to HTTPS
    user = django_user_model.objects.create_superuser("root", "root@example.com", None)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def demo():
    demo_yaml = Path(settings.BASE_DIR) / "gateway" / "defaults" / "demo.yaml"
    call_command("importconfig", str(demo_yaml), stdout=io.StringIO())
    team = make_team("acme")
    key, _ = make_key(team, make_feature(team, "chatbot"))
    UsageRecord.objects.create(
        request_id="req-1",
        created_at=timezone.now(),
        team=team,
        feature=key.feature,
        api_key=key,
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        provider="sim-openai",
        attempts=1,
        input_tokens=10,
        output_tokens=20,
        cost_usd=Decimal("0.0000135"),
    )


def test_every_registered_gateway_model_has_an_admin():
    registered = {
        m._meta.model_name for m in admin.site._registry if m._meta.app_label == "gateway"
    }
    assert registered == set(GATEWAY_MODELS)


@pytest.mark.parametrize("model", GATEWAY_MODELS)
def test_every_changelist_loads(staff, demo, model):
    response = staff.get(reverse(f"admin:gateway_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", [m for m in GATEWAY_MODELS if m not in READ_ONLY])
def test_every_add_page_loads(staff, model):
    assert staff.get(reverse(f"admin:gateway_{model}_add")).status_code == 200


@pytest.mark.parametrize("model", [m for m in GATEWAY_MODELS if m != "deadletter"])
def test_every_change_page_loads(staff, demo, model):
    obj = admin.site._registry
    model_cls = next(
        m for m in obj if m._meta.model_name == model and m._meta.app_label == "gateway"
    )
    pk = model_cls.objects.order_by("pk").values_list("pk", flat=True).first()
    response = staff.get(reverse(f"admin:gateway_{model}_change", args=[pk]))
    assert response.status_code == 200


def test_the_usage_changelist_runs_a_fixed_number_of_queries(
    staff, demo, django_assert_max_num_queries
):
    team = make_team("more")
    for i in range(20):
        UsageRecord.objects.create(
            request_id=f"r{i}",
            created_at=timezone.now(),
            team=team,
            feature=make_feature(team, f"f{i}"),
        )
    with django_assert_max_num_queries(15):
        response = staff.get(reverse("admin:gateway_usagerecord_changelist"))
    assert response.status_code == 200
    assert b"more/f19" in response.content


def test_creating_a_key_shows_its_secret_once(staff):
    team = make_team("acme")
    feature = make_feature(team, "chatbot")
    response = staff.post(
        reverse("admin:gateway_apikey_add"), {"team": team.pk, "feature": feature.pk, "name": "web"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get()
    secret = response.context["secret"]
    assert key.hashed_secret == ApiKey.hash_secret(secret)
    assert secret.encode() in response.content
    assert b"shown only this once" in response.content

    change = staff.get(reverse("admin:gateway_apikey_change", args=[key.pk]))
    listing = staff.get(reverse("admin:gateway_apikey_changelist"))
    for page in (change, listing):
        assert page.status_code == 200
        assert secret.encode() not in page.content
        assert key.hashed_secret.encode() not in page.content
    assert key.prefix.encode() in listing.content


def test_a_key_for_another_teams_feature_is_refused_in_the_form(staff):
    team = make_team("acme")
    other = make_feature(make_team("other"), "chatbot")
    response = staff.post(
        reverse("admin:gateway_apikey_add"), {"team": team.pk, "feature": other.pk, "name": "web"}
    )
    assert response.status_code == 200
    assert b"The feature belongs to another team." in response.content
    assert not ApiKey.objects.exists()


def test_the_revoke_action_revokes_only_the_selected_keys(staff):
    team = make_team("acme")
    (chosen, _), (kept, _) = make_key(team), make_key(team)
    response = staff.post(
        reverse("admin:gateway_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [chosen.pk], "confirmed": "yes"},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Revoked 1 key(s)" in response.content
    chosen.refresh_from_db()
    kept.refresh_from_db()
    assert chosen.revoked_at is not None and not chosen.is_active
    assert kept.is_active


def test_the_provider_list_says_whether_its_key_is_set_never_its_value(staff, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    Provider.objects.create(name="openai", kind="openai", api_key_env="OPENAI_API_KEY")
    Provider.objects.create(name="anthropic", kind="anthropic", api_key_env="UNSET_X_API_KEY")
    response = staff.get(reverse("admin:gateway_provider_changelist"))
    assert response.status_code == 200
    assert b"sk-very-secret-value" not in response.content
    assert b"OPENAI_API_KEY" in response.content
    shown = re.findall(rb'class="field-key_is_set"><img[^>]*alt="(\w+)"', response.content)
    assert shown == [b"False", b"True"]  # anthropic's variable is unset, openai's is set


def test_the_usage_ledger_is_read_only(staff, demo):
    record = UsageRecord.objects.get()
    add = staff.get(reverse("admin:gateway_usagerecord_add"))
    change = staff.get(reverse("admin:gateway_usagerecord_change", args=[record.pk]))
    posted = staff.post(
        reverse("admin:gateway_usagerecord_change", args=[record.pk]), {"served_model": "tampered"}
    )
    delete = staff.get(reverse("admin:gateway_usagerecord_delete", args=[record.pk]))
    assert add.status_code == 403
    assert change.status_code == 200 and b'name="_save"' not in change.content
    assert posted.status_code == 403
    assert delete.status_code == 403
    record.refresh_from_db()
    assert record.served_model == "gpt-4o-mini"


def test_the_usage_ledger_filters_by_team_model_status_and_cache(staff, demo):
    url = reverse("admin:gateway_usagerecord_changelist")
    hit = staff.get(
        url,
        {
            "served_model": "gpt-4o-mini",
            "status__exact": "ok",
            "cache__exact": "miss",
            "provider": "sim-openai",
        },
    )
    miss = staff.get(url, {"cache__exact": "hit"})
    assert hit.status_code == 200 and miss.status_code == 200
    assert hit.context["cl"].result_count == 1
    assert miss.context["cl"].result_count == 0


@pytest.mark.parametrize(
    ("typed", "saved", "message"),
    [
        ('["seed", "logprobs"]', ["seed", "logprobs"], None),
        ('["sed"]', [], b"Unknown parameter(s) sed"),
        ('"seed"', [], b"Expected a list of parameter names"),
    ],
)
def test_a_models_drop_params_are_set_and_checked_in_the_admin(staff, typed, saved, message):
    from gateway.models import LanguageModel

    provider = Provider.objects.create(name="anthropic", kind="anthropic")
    model = LanguageModel.objects.create(name="claude-haiku", provider=provider, upstream_id="c")
    url = reverse("admin:gateway_languagemodel_change", args=[model.pk])
    page = staff.get(url)
    assert b"Parameters the provider cannot honour" in page.content
    response = staff.post(
        url,
        {
            "name": "claude-haiku",
            "provider": provider.pk,
            "upstream_id": "c",
            "enabled": "on",
            "context_window": 200000,
            "max_output_tokens": 8192,
            "mode": "chat",  # the select's default, as a browser sends it
            "drop_params": typed,
            "fallback_links-TOTAL_FORMS": 0,
            "fallback_links-INITIAL_FORMS": 0,
        },
    )
    model.refresh_from_db()
    assert model.drop_params == saved
    if message is None:
        assert response.status_code == 302
    else:
        assert response.status_code == 200 and message in response.content


def test_an_embedding_model_is_added_in_the_admin_with_its_mode_and_dimensions(staff):
    from gateway.models import LanguageModel

    provider = Provider.objects.create(name="openai", kind="openai")
    url = reverse("admin:gateway_languagemodel_add")
    page = staff.get(url).content.decode()
    assert '<option value="embedding">' in page and 'name="dimensions"' in page
    response = staff.post(
        url,
        {
            "name": "embed-small",
            "provider": provider.pk,
            "upstream_id": "text-embedding-3-small",
            "mode": "embedding",
            "dimensions": 1536,
            "input_per_mtok": "0.02",
            "output_per_mtok": "0",
            "enabled": "on",
            "context_window": 8191,
            "max_output_tokens": 1,
            "drop_params": "[]",
            "fallback_links-TOTAL_FORMS": 0,
            "fallback_links-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302
    model = LanguageModel.objects.get(name="embed-small")
    assert (model.mode, model.dimensions) == ("embedding", 1536)
    listing = staff.get(reverse("admin:gateway_languagemodel_changelist") + "?mode=embedding")
    assert b"embed-small" in listing.content
