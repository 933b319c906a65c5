"""The team and feature filters at scale: drop-down lists while the names are few; past
GATEWAY_REPORTS_SELECT_LIMIT, text boxes whose suggestions come from /reports/api/names,
scoped to the reader's teams, and an exact name typed still filters the page."""

from __future__ import annotations

import pytest

from gateway.models import Team
from reports.access import MANAGERS_GROUP
from reports.models import ManagerScope
from tests.factories import make_feature, make_team
from tests.reports.signin import sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db):
    for name in ("alpha", "alpine", "beta"):
        team = make_team(name)
        make_feature(team, "search")
        make_feature(team, "chatbot")


def test_few_names_are_a_drop_down_list(world, staff):
    html = sign_in("boss", "pw-boss-123").get("/reports/").content.decode()
    assert '<select name="team">' in html and '<option value="alpine">' in html
    assert 'data-names="team"' not in html


def test_past_the_limit_the_filters_are_text_boxes_with_suggestions(world, staff, settings):
    settings.REPORTS_SELECT_LIMIT = 2
    manager = sign_in("boss", "pw-boss-123")
    for page in ("/reports/", "/reports/monthly/"):
        html = manager.get(page).content.decode()
        assert 'data-names="team"' in html and '<select name="team">' not in html, page
        assert '<option value="alpine">' not in html, page
    assert 'data-names="feature"' in manager.get("/reports/spend/").content.decode()
    names = manager.get("/reports/api/names?kind=team&q=ALP").json()["names"]
    assert names == ["alpha", "alpine"]
    features = manager.get("/reports/api/names?kind=feature&q=alpine/se").json()["names"]
    assert features == ["alpine/search"]
    # An exact name typed in the box filters the page as the list did.
    filtered = manager.get("/reports/api/overview?team=beta").json()
    assert filtered["filters"]["team"] == "beta"


def test_suggestions_are_only_the_readers_teams(world, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("lea", password="pw-lea-12345")
    user.groups.add(Group.objects.get_or_create(name=MANAGERS_GROUP)[0])
    ManagerScope.objects.create(user=user).teams.add(Team.objects.get(name="alpine"))
    manager = sign_in("lea", "pw-lea-12345")
    assert manager.get("/reports/api/names?kind=team&q=al").json()["names"] == ["alpine"]
    features = manager.get("/reports/api/names?kind=feature&q=search").json()["names"]
    assert features == ["alpine/search"]


@pytest.mark.parametrize(
    "query, param",
    [("kind=teams&q=a", "kind"), ("kind=team&q=%00", "q"), ("kind=team&q=" + "x" * 200, "q")],
)
def test_bad_suggestion_queries_are_a_400_naming_the_parameter(world, staff, query, param):
    answer = sign_in("boss", "pw-boss-123").get(f"/reports/api/names?{query}")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_strangers_get_no_names(client, world):
    assert client.get("/reports/api/names?kind=team&q=a").status_code in (401, 403)
