"""`createmanager` and the admin's Report access: the two ways to give someone the dashboards
of chosen teams (and only those)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from reports.access import MANAGERS_GROUP, allowed_team_ids, is_reader
from reports.models import ManagerScope

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-demo-passphrase-42"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("createmanager", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_noinput_takes_the_password_from_the_environment(world, monkeypatch):
    monkeypatch.setenv("MANAGER_PASSWORD", PASSWORD)
    out = run("mia", "--teams", "acme, globex", "--email", "mia@example.com", "--noinput")
    assert "Manager mia created; teams: acme, globex" in out
    user = User.objects.get(username="mia")
    assert user.check_password(PASSWORD) and user.email == "mia@example.com"
    assert not user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [MANAGERS_GROUP]
    assert is_reader(user)
    assert allowed_team_ids(user) == {world["acme"].id, world["globex"].id}


def test_noinput_without_the_variable_is_a_clear_error(world, monkeypatch):
    monkeypatch.delenv("MANAGER_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="MANAGER_PASSWORD environment variable"):
        run("mia", "--teams", "acme", "--noinput")
    assert not User.objects.filter(username="mia").exists()


def test_unknown_teams_are_named_and_nothing_is_created(world, monkeypatch):
    monkeypatch.setenv("MANAGER_PASSWORD", PASSWORD)
    with pytest.raises(CommandError, match=r"Unknown teams: initech, hooli\. Known teams: acme"):
        run("mia", "--teams", "acme,initech,hooli", "--noinput")
    assert not User.objects.filter(username="mia").exists()


def test_an_existing_username_is_refused(world, monkeypatch):
    User.objects.create_user("mia")
    monkeypatch.setenv("MANAGER_PASSWORD", PASSWORD)
    with pytest.raises(CommandError, match="already exists"):
        run("mia", "--teams", "acme", "--noinput")


def test_a_weak_password_is_refused(world, monkeypatch):
    monkeypatch.setenv("MANAGER_PASSWORD", "123")
    with pytest.raises(CommandError, match="too short"):
        run("mia", "--teams", "acme", "--noinput")


def test_without_noinput_it_asks_twice_until_both_match(world, monkeypatch):
    answers = iter(["first-passphrase-1", "differs", PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    out = run("mia", "--teams", "acme")
    assert "The two passwords differ" in out
    assert User.objects.get(username="mia").check_password(PASSWORD)
    assert allowed_team_ids(User.objects.get(username="mia")) == {world["acme"].id}


def test_no_teams_makes_a_manager_who_sees_nothing(world, monkeypatch):
    monkeypatch.setenv("MANAGER_PASSWORD", PASSWORD)
    assert "teams: none" in run("noah", "--noinput")
    assert allowed_team_ids(User.objects.get(username="noah")) == frozenset()


def test_the_admin_edits_a_users_teams_under_report_access(client, world, monkeypatch):
    monkeypatch.setenv("MANAGER_PASSWORD", PASSWORD)
    run("mia", "--teams", "acme", "--noinput")
    mia = User.objects.get(username="mia")
    root = User.objects.create_superuser("root", "root@example.com", "pw-root-12345")
    client.force_login(root)  # the admin's own login is not what is under test here
    url = f"/admin/auth/user/{mia.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert b'id="report_scope-group"' in page.content and b"Report access" in page.content
    assert b'name="report_scope-0-teams"' in page.content
    scope = ManagerScope.objects.get(user=mia)
    form = {
        "username": "mia",
        "email": "mia@example.com",
        "is_active": "on",
        "groups": [str(g) for g in mia.groups.values_list("id", flat=True)],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
        "report_scope-TOTAL_FORMS": "1",
        "report_scope-INITIAL_FORMS": "1",
        "report_scope-MIN_NUM_FORMS": "0",
        "report_scope-MAX_NUM_FORMS": "1",
        "report_scope-0-id": str(scope.pk),
        "report_scope-0-user": str(mia.pk),
        "report_scope-0-teams": [str(world["globex"].id)],
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    assert allowed_team_ids(mia) == {world["globex"].id}
