"""The rules records enforce on themselves: key secrets, key state, and cross-team links."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from budgets.models import Budget
from gateway.models import KEY_PREFIX, ApiKey, Fallback
from tests.factories import make_feature, make_key, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db


def test_a_new_secret_is_stored_only_as_its_sha256_and_prefix():
    key, secret = make_key(make_team())
    key.refresh_from_db()
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert key.prefix == secret[:10]
    assert key.hashed_secret == ApiKey.hash_secret(secret)
    assert secret not in {key.prefix, key.hashed_secret, key.name}


def test_two_keys_never_share_a_secret():
    team = make_team()
    (_, first), (_, second) = make_key(team), make_key(team)
    assert first != second


def test_a_fresh_key_is_active():
    key, _ = make_key(make_team())
    assert key.is_active
    assert list(ApiKey.objects.active()) == [key]


def test_an_expired_key_is_inactive():
    key, _ = make_key(make_team(), expires_at=timezone.now() - timedelta(seconds=1))
    assert not key.is_active
    assert not ApiKey.objects.active().exists()


def test_a_key_expiring_later_is_active():
    key, _ = make_key(make_team(), expires_at=timezone.now() + timedelta(days=1))
    assert key.is_active
    assert ApiKey.objects.active().get() == key


def test_a_revoked_key_is_inactive():
    key, _ = make_key(make_team(), revoked_at=timezone.now())
    assert not key.is_active
    assert not ApiKey.objects.active().exists()


def test_a_key_cannot_be_pinned_to_another_teams_feature():
    other_feature = make_feature(make_team("other"))
    key = ApiKey(team=make_team(), feature=other_feature)
    key.set_new_secret()
    with pytest.raises(ValidationError) as exc:
        key.full_clean()
    assert "feature" in exc.value.message_dict


def test_a_key_pinned_to_its_own_teams_feature_is_valid():
    team = make_team()
    key = ApiKey(team=team, feature=make_feature(team))
    key.set_new_secret()
    key.full_clean()


def test_a_feature_budget_needs_a_feature():
    budget = Budget(team=make_team(), scope=Budget.Scope.FEATURE)
    with pytest.raises(ValidationError) as exc:
        budget.full_clean()
    assert "feature" in exc.value.message_dict


def test_a_team_budget_names_no_feature():
    team = make_team()
    budget = Budget(team=team, scope=Budget.Scope.TEAM, feature=make_feature(team))
    with pytest.raises(ValidationError) as exc:
        budget.full_clean()
    assert "feature" in exc.value.message_dict


def test_a_budget_cannot_cover_another_teams_feature():
    budget = Budget(
        team=make_team(), scope=Budget.Scope.FEATURE, feature=make_feature(make_team("other"))
    )
    with pytest.raises(ValidationError) as exc:
        budget.full_clean()
    assert exc.value.message_dict["feature"] == ["The feature belongs to another team."]


def test_budget_thresholds_must_be_whole_percentages():
    budget = Budget(team=make_team(), alert_thresholds=[50, 0.8])
    with pytest.raises(ValidationError) as exc:
        budget.full_clean()
    assert "alert_thresholds" in exc.value.message_dict


def test_budget_alert_emails_accept_lines_and_commas():
    budget = Budget(alert_emails="a@example.com, b@example.com\n c@example.com\n")
    assert budget.emails == ["a@example.com", "b@example.com", "c@example.com"]


def test_a_team_time_zone_must_exist():
    team = make_team()
    team.timezone = "Mars/Olympus"
    with pytest.raises(ValidationError) as exc:
        team.full_clean()
    assert "timezone" in exc.value.message_dict


def test_a_model_cannot_fall_back_to_itself():
    model = make_model("m", make_provider())
    with pytest.raises(ValidationError) as exc:
        Fallback(model=model, target=model).full_clean()
    assert "target" in exc.value.message_dict


def test_a_model_without_both_prices_is_unpriced():
    provider = make_provider()
    assert make_model("priced", provider).is_priced
    assert not make_model("half", provider, output_price=None).is_priced
