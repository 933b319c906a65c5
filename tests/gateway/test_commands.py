"""The management commands: createapikey, importconfig/exportconfig and demosetup."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from budgets.models import Budget
from gateway.models import ApiKey, Baseline, Feature, LanguageModel, Provider, RouteRule, Team
from tests.factories import make_feature, make_team

pytestmark = pytest.mark.django_db

DEFAULTS = Path(settings.BASE_DIR) / "gateway" / "defaults"
RECORDS = (Provider, LanguageModel, RouteRule, Team, Feature, Budget)


def run(command: str, *args, **kwargs) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {m.__name__: m.objects.count() for m in RECORDS}


def wipe() -> None:
    for model in (Budget, Feature, Baseline, Team, RouteRule, LanguageModel, Provider):
        model.objects.all().delete()


# --- createapikey ---------------------------------------------------------------------------


def test_createapikey_prints_the_key_alone_on_its_last_line_and_stores_its_hash():
    team = make_team("chatbot")
    secret = run("createapikey", "--team", "chatbot", "--name", "ci").rstrip("\n").split("\n")[-1]
    key = ApiKey.objects.get(hashed_secret=ApiKey.hash_secret(secret))
    assert (key.team, key.feature, key.name) == (team, None, "ci")
    assert key.prefix == secret[:10] and key.is_active
    assert not ApiKey.objects.filter(hashed_secret=secret).exists()


def test_createapikey_pins_the_key_to_a_feature_and_sets_its_expiry():
    team = make_team("chatbot")
    feature = make_feature(team, "search")
    out = run("createapikey", "--team", "chatbot", "--feature", "search", "--expires-days", "7")
    key = ApiKey.objects.get(hashed_secret=ApiKey.hash_secret(out.split()[-1]))
    assert key.feature == feature
    expected = timezone.now() + timedelta(days=7)
    assert abs(key.expires_at - expected) < timedelta(minutes=1)


def test_createapikey_names_the_unknown_team():
    make_team("chatbot")
    with pytest.raises(CommandError, match=r"no team named 'chatbt' \(teams: chatbot\)"):
        run("createapikey", "--team", "chatbt")
    assert not ApiKey.objects.exists()


def test_createapikey_refuses_a_feature_of_another_team():
    make_team("chatbot")
    make_feature(make_team("other"), "search")
    with pytest.raises(CommandError, match="team 'chatbot' has no feature 'search'"):
        run("createapikey", "--team", "chatbot", "--feature", "search")
    assert not ApiKey.objects.exists()


# --- importconfig / exportconfig ------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_importconfig_loads_the_shipped_files(name):
    out = run("importconfig", str(DEFAULTS / name))
    assert f"Imported {DEFAULTS / name}." in out
    assert Provider.objects.exists() and LanguageModel.objects.exists()
    assert RouteRule.objects.count() == 4
    assert list(RouteRule.objects.values_list("name", flat=True))[-1] == "default"


def test_importing_the_same_file_twice_creates_and_changes_nothing():
    run("importconfig", str(DEFAULTS / "demo.yaml"))
    before = counts()
    out = run("importconfig", str(DEFAULTS / "demo.yaml"))
    assert counts() == before
    for line in out.splitlines()[:-1]:
        assert line.split(": ", 1)[1].startswith("0 created, 0 updated"), line


def test_the_demo_has_the_eight_features_and_the_runaway_agent_on_its_first_team():
    run("importconfig", str(DEFAULTS / "demo.yaml"))
    names = set(Feature.objects.filter(team__name="product").values_list("name", flat=True))
    assert names == {
        "research-agent",  # the runaway loop demotraffic runs (reports/demo.py)
        "chatbot",
        "summarization",
        "code-generation",
        "moderation",
        "search",
        "classification",
        "translation",
        "data-extraction",
    }


def test_exportconfig_round_trips_through_an_empty_database(tmp_path):
    run("importconfig", str(DEFAULTS / "config.yaml"))
    run("importconfig", str(DEFAULTS / "demo.yaml"))
    first = tmp_path / "first.yaml"
    run("exportconfig", str(first))
    before = counts()
    wipe()
    assert not Provider.objects.exists()
    run("importconfig", str(first))
    assert counts() == before
    second = tmp_path / "second.yaml"
    run("exportconfig", str(second))
    assert second.read_text() == first.read_text()


def test_exportconfig_writes_to_standard_output_without_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    run("importconfig", str(DEFAULTS / "config.yaml"))
    team = Team.objects.get(name="default")
    key = ApiKey(team=team)
    secret = key.set_new_secret()
    key.save()
    out = run("exportconfig")
    assert "api_key_env: OPENAI_API_KEY" in out
    for leaked in ("sk-do-not-leak", secret, key.prefix, key.hashed_secret):
        assert leaked not in out


def test_importconfig_of_a_bad_file_is_a_command_error_naming_the_entry(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  - {name: sim, kind: simulated}\n"
        "models:\n  - {name: m1, provider: sim}\n  - {name: m2, provider: nope}\n"
    )
    with pytest.raises(CommandError) as exc:
        run("importconfig", str(bad))
    assert "models[1] (m2): unknown provider 'nope'" in str(exc.value)
    assert "Nothing was imported." in str(exc.value)
    assert not Provider.objects.exists() and not LanguageModel.objects.exists()


def test_importconfig_of_a_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run("importconfig", str(tmp_path / "absent.yaml"))


def test_importconfig_of_broken_yaml_is_a_command_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [ {name: sim\n")
    with pytest.raises(CommandError, match="is not valid YAML"):
        run("importconfig", str(bad))


# --- demosetup ------------------------------------------------------------------------------


@pytest.fixture
def demo_dir(settings, tmp_path, monkeypatch):
    settings.BASE_DIR = tmp_path
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    return tmp_path


def test_demosetup_creates_the_admin_a_working_key_and_prints_the_urls(demo_dir):
    out = run("demosetup")
    secret = (demo_dir / "var" / "demo-key.txt").read_text().strip()
    key = ApiKey.objects.get(hashed_secret=ApiKey.hash_secret(secret))
    assert key.team.name == "product" and key.is_active
    assert f"export KEY={secret}" in out
    assert "http://127.0.0.1:8000/v1" in out and "/admin/" in out and "/reports/" in out
    assert (
        'curl http://127.0.0.1:8000/v1/chat/completions -H "Authorization: Bearer $KEY" '
        '-H "X-Gateway-Feature: chatbot"'
    ) in out
    password = out.split("Admin login: admin / ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_demosetup_uses_admin_password_from_the_environment(demo_dir, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery")
    out = run("demosetup")
    assert "correct-horse-battery" not in out
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery")


def test_running_demosetup_again_keeps_the_key_and_the_admin(demo_dir):
    run("demosetup")
    before = counts(), ApiKey.objects.count(), get_user_model().objects.count()
    secret = (demo_dir / "var" / "demo-key.txt").read_text()
    first_password = (demo_dir / "var" / "admin-password.txt").read_text().strip()
    out = run("demosetup")
    assert (counts(), ApiKey.objects.count(), get_user_model().objects.count()) == before
    assert (demo_dir / "var" / "demo-key.txt").read_text() == secret
    assert f"Admin login: admin / {first_password}" in out  # shown again on every run
    assert get_user_model().objects.get(username="admin").check_password(first_password)


def test_demosetup_replaces_a_revoked_demo_key(demo_dir):
    run("demosetup")
    ApiKey.objects.update(revoked_at=timezone.now())
    run("demosetup")
    secret = (demo_dir / "var" / "demo-key.txt").read_text().strip()
    assert ApiKey.objects.get(hashed_secret=ApiKey.hash_secret(secret)).is_active
    assert ApiKey.objects.count() == 2
