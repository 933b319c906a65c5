from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from reports.models import ManagerScope
from tests.factories import make_key
from tests.reports.conftest import make_record, write_ledger

pytestmark = pytest.mark.django_db

PAGES = [
    "/reports/",
    "/reports/spend/",
    "/reports/cache/",
    "/reports/providers/",
    "/reports/models/",
]
APIS = ["overview", "spend", "cache", "providers", "models"]


@pytest.fixture
def traffic(world):
    write_ledger(
        [
            make_record(world["acme"], world["acme_chat"], cost_usd="1.5"),
            make_record(world["globex"], world["globex_chat"], cost_usd="4"),
        ]
    )
    return world


@pytest.fixture
def scoped_manager(traffic, managers_group) -> User:
    user = User.objects.create_user("mgr", password="pw-mgr-1234")
    user.groups.add(managers_group)
    ManagerScope.objects.create(user=user).teams.add(traffic["acme"])
    return user


@pytest.mark.parametrize("url", [*PAGES, "/reports/spend.csv"])
def test_it_redirects_anonymous_visitors_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/reports/login/?next=/reports/")


def test_it_answers_401_to_anonymous_api_calls(client):
    response = client.get("/reports/api/overview")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "permission_denied"


@pytest.mark.parametrize(
    "url", [*PAGES, *(f"/reports/api/{p}" for p in APIS), "/reports/spend.csv"]
)
def test_a_service_api_key_reads_no_report(client, traffic, url):
    _, secret = make_key(traffic["acme"])
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 403
    assert b"acme" not in response.content and b"1.5" not in response.content


def test_a_service_key_is_refused_even_beside_a_staff_session(client, traffic, staff):
    _, secret = make_key(traffic["acme"])
    client.force_login(staff)
    response = client.get("/reports/api/overview", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 403


def test_a_signed_in_user_who_is_neither_staff_nor_manager_is_refused(client, traffic):
    client.force_login(User.objects.create_user("dev", password="pw-dev-12345"))
    assert client.get("/reports/").status_code == 403
    assert client.get("/reports/api/overview").status_code == 403


def test_a_manager_without_a_scope_sees_no_team_and_is_told_so(client, traffic, managers_group):
    user = User.objects.create_user("cfo", password="pw-cfo-12345")
    user.groups.add(managers_group)
    client.force_login(user)
    body = client.get("/reports/api/spend?by=team").json()
    assert body["series"] == [] and body["total_usd"] == "0.0000000000"
    for url in PAGES:
        page = client.get(url)
        assert page.status_code == 200
        assert b"No team is assigned to you yet" in page.content
        assert b"acme" not in page.content and b"globex" not in page.content


def test_staff_without_the_view_all_permission_see_only_their_teams(client, traffic):
    user = User.objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    ManagerScope.objects.create(user=user).teams.add(traffic["globex"])
    client.force_login(user)
    body = client.get("/reports/api/spend?by=team").json()
    assert [s["name"] for s in body["series"]] == ["globex"]


def test_staff_with_the_view_all_permission_and_superusers_see_every_team(client, traffic, staff):
    root = User.objects.create_superuser("root", "root@example.com", "pw-root-12345")
    for user in (staff, root):
        client.force_login(user)
        body = client.get("/reports/api/spend?by=team").json()
        assert {s["name"] for s in body["series"]} == {"acme", "globex"}
        assert body["total_usd"] == "5.5000000000"


def test_a_scoped_manager_sees_only_the_allowed_teams(client, scoped_manager):
    client.force_login(scoped_manager)
    body = client.get("/reports/api/spend?by=team").json()
    assert [s["name"] for s in body["series"]] == ["acme"]
    assert body["total_usd"] == "1.5000000000"
    page = client.get("/reports/spend/?by=team")
    assert page.status_code == 200
    assert b"globex" not in page.content


def test_a_scoped_manager_cannot_widen_the_scope_with_the_team_filter(client, scoped_manager):
    client.force_login(scoped_manager)
    body = client.get("/reports/api/overview?team=globex").json()
    assert body["totals"]["requests"] == 0
    assert body["totals"]["spend_usd"] == "0.0000000000"
    csv_text = client.get("/reports/spend.csv?team=globex").content.decode()
    assert csv_text.splitlines()[1:] == []


def test_a_scope_with_no_team_shows_nothing(client, traffic, managers_group):
    user = User.objects.create_user("nobody", password="pw-nobody-123")
    user.groups.add(managers_group)
    ManagerScope.objects.create(user=user)
    client.force_login(user)
    assert client.get("/reports/api/overview").json()["totals"]["requests"] == 0
