"""Who is calling: the bearer key (cached for the config TTL) and the feature it bills."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from gateway.auth import authenticate, resolve_feature
from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.models import ApiKey
from gateway.snapshot import store
from tests.factories import make_feature, make_key, make_team

# The key and snapshot loaders run in a worker thread (sync_to_async, thread_sensitive=False),
# so the records must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)


def auth(header: str | None):
    return async_to_sync(authenticate)(header)


def refused(header: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        auth(header)
    assert info.value.status == 401
    assert info.value.type == "authentication_error"
    return info.value


def test_a_valid_key_resolves_to_its_team():
    team = make_team("acme")
    key, secret = make_key(team)
    key_snap, team_snap, snapshot = auth(f"Bearer {secret}")
    assert (key_snap.id, key_snap.team_id, key_snap.prefix) == (key.id, team.id, secret[:10])
    assert team_snap.name == "acme"
    assert snapshot.teams[team.id] is team_snap


def test_the_bearer_scheme_is_case_insensitive():
    _, secret = make_key(make_team())
    assert auth(f"bearer   {secret} ")[0].prefix == secret[:10]


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_key_is_a_401(header):
    assert "No API key" in refused(header).message


@pytest.mark.parametrize("header", ["Token abc", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
def test_a_malformed_header_is_a_401(header):
    assert "Malformed" in refused(header).message


def test_an_unknown_key_is_a_401():
    make_key(make_team())
    err = refused("Bearer gw-not-a-real-key")
    assert err.code == "invalid_api_key"


def test_a_revoked_key_is_a_401_revoked_api_key():
    key, secret = make_key(make_team(), revoked_at=timezone.now())
    err = refused(f"Bearer {secret}")
    assert err.code == "revoked_api_key"
    assert key.prefix in err.message


def test_an_expired_key_is_a_401_revoked_api_key():
    _, secret = make_key(make_team(), expires_at=timezone.now() - timedelta(seconds=1))
    assert refused(f"Bearer {secret}").code == "revoked_api_key"


def test_a_key_not_yet_expired_works():
    _, secret = make_key(make_team(), expires_at=timezone.now() + timedelta(hours=1))
    assert auth(f"Bearer {secret}")[0].expires_at is not None


def test_a_revoked_key_is_refused_at_once_when_its_save_announces_it(settings):
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_TTL_S": 60}
    key, secret = make_key(make_team())
    auth(f"Bearer {secret}")
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])  # the signal bumps the config version
    assert refused(f"Bearer {secret}").code == "revoked_api_key"  # no waiting for the TTL


def test_a_write_that_bypasses_the_signals_is_read_at_the_next_full_reload(settings):
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_TTL_S": 0.05, "CONFIG_FULL_RELOAD_S": 60}
    key, secret = make_key(make_team())
    auth(f"Bearer {secret}")
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # no signal, no bump
    time.sleep(0.1)
    auth(f"Bearer {secret}")  # past the TTL: the version has not moved, keys are not read
    time.sleep(0.2)
    assert auth(f"Bearer {secret}")[0].id == key.id
    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_FULL_RELOAD_S": 0}
    time.sleep(0.2)  # the refresh the line above started has landed
    auth(f"Bearer {secret}")  # the safety net's full reload starts
    time.sleep(0.2)
    assert refused(f"Bearer {secret}").code == "revoked_api_key"


def test_a_revoked_key_stops_at_once_when_the_store_is_invalidated():
    key, secret = make_key(make_team())
    auth(f"Bearer {secret}")
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    store().invalidate()
    assert refused(f"Bearer {secret}").code == "revoked_api_key"


# --- The feature billed ------------------------------------------------------------------------


def feature_for(secret: str, header: str | None):
    key, team, _ = auth(f"Bearer {secret}")
    return resolve_feature(key, team, header)


def test_a_pinned_key_bills_its_feature_with_or_without_the_header():
    team = make_team()
    chatbot = make_feature(team, "chatbot")
    make_feature(team, "search")
    _, secret = make_key(team, feature=chatbot)
    assert feature_for(secret, None).id == chatbot.id
    assert feature_for(secret, " chatbot ").id == chatbot.id


def test_a_pinned_key_naming_another_feature_is_a_403():
    team = make_team()
    chatbot = make_feature(team, "chatbot")
    make_feature(team, "search")
    _, secret = make_key(team, feature=chatbot)
    with pytest.raises(PermissionDenied) as info:
        feature_for(secret, "search")
    assert info.value.status == 403
    assert info.value.param == "X-Gateway-Feature"
    assert "pinned to the feature 'chatbot'" in info.value.message


def test_an_unpinned_key_bills_the_feature_named_in_the_header():
    team = make_team()
    make_feature(team, "chatbot")
    search = make_feature(team, "search")
    _, secret = make_key(team)
    assert feature_for(secret, "search").id == search.id


def test_an_unknown_feature_is_a_400_listing_the_teams_features():
    team = make_team("acme")
    make_feature(team, "search")
    make_feature(team, "chatbot")
    make_feature(make_team("other"), "secret-project")
    _, secret = make_key(team)
    with pytest.raises(InvalidRequest) as info:
        feature_for(secret, "billing")
    err = info.value
    assert (err.status, err.code, err.param) == (400, "unknown_feature", "X-Gateway-Feature")
    assert (
        err.message
        == "Unknown feature 'billing' for team 'acme'; its features are: chatbot, search."
    )


def test_a_team_with_features_must_name_one():
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    with pytest.raises(InvalidRequest) as info:
        feature_for(secret, "  ")
    assert (info.value.status, info.value.code) == (400, "feature_required")
    assert "chatbot" in info.value.message


def test_a_team_without_features_bills_no_feature():
    _, secret = make_key(make_team())
    assert feature_for(secret, None) is None
