"""The admin's usage-record list at scale, through the real login form: its sidebar lists no
team, feature or key (search boxes backed by the admin's autocomplete), its search is an exact
request-id lookup, and no query counts or scans the whole ledger."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gateway import adminfilters
from gateway.models import UsageRecord
from tests.factories import make_feature, make_key, make_team

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple 42"
LIST = "/admin/gateway/usagerecord/"


def csrf(page) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)[1].decode()


@pytest.fixture
def admin(django_user_model, settings) -> Client:
    settings.SECURE_SSL_REDIRECT = False
    django_user_model.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/?next=/admin/")
    form = {"username": "ops", "password": PASSWORD, "csrfmiddlewaretoken": csrf(page)}
    response = client.post("/admin/login/?next=/admin/", {**form, "next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    return client


@pytest.fixture
def ledger():
    """40 teams with a feature and a key each, and a record per team."""
    now = timezone.now()
    rows = []
    for i in range(40):
        team = make_team(f"team-{i:02}")
        feature = make_feature(team, f"feat-{i:02}")
        key, _ = make_key(team, feature)
        rows.append(
            UsageRecord(
                request_id=f"req-{i:02}-abc",
                created_at=now,
                team=team,
                feature=feature,
                api_key=key,
                served_model="gpt-4o-mini",
            )
        )
    UsageRecord.objects.bulk_create(rows)
    return rows


def test_the_sidebar_lists_no_team_feature_or_key(admin, ledger):
    with CaptureQueriesContext(connection) as queries:
        page = admin.get(LIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert page.context["cl"].result_count == 40
    assert "team-17/feat-17" in html[: html.index('id="changelist-filter"')]  # listed ...
    assert 'class="admin-autocomplete"' in html and "admin/js/vendor/select2" in html
    sidebar = html[html.index('id="changelist-filter"') :]
    assert "team-17" not in sidebar and "feat-17" not in sidebar  # ... but no choice of them
    sql = [q["sql"].lower() for q in queries.captured_queries]
    teams = [q for q in sql if 'from "gateway_team"' in q and "join" not in q]
    assert teams == []  # no query of the teams table on its own: nothing lists them
    counts = [q for q in sql if "count(" in q]
    assert counts and all("limit" in q for q in counts)  # the count stops at the cap
    assert not any("distinct" in q for q in sql)  # no date hierarchy, no distinct models


def test_the_autocomplete_finds_a_team_by_name_and_filters_by_it(admin, ledger):
    found = admin.get(
        "/admin/autocomplete/",
        {
            "term": "team-17",
            "app_label": "gateway",
            "model_name": "usagerecord",
            "field_name": "team",
        },  # fmt: skip
    ).json()
    assert [r["text"] for r in found["results"]] == ["team-17"]
    team_id = found["results"][0]["id"]
    page = admin.get(LIST, {"team__id__exact": team_id, "status__exact": "ok"})
    assert page.context["cl"].result_count == 1
    html = page.content.decode()
    assert f'<option value="{team_id}" selected>team-17</option>' in html  # the choice shown
    assert 'name="status__exact" value="ok"' in html  # the other filters are kept


def test_the_search_is_an_exact_request_id_lookup(admin, ledger):
    with CaptureQueriesContext(connection) as queries:
        found = admin.get(LIST, {"q": "req-17-abc"})
        partial = admin.get(LIST, {"q": "req-17"})
    assert [r.request_id for r in found.context["cl"].result_list] == ["req-17-abc"]
    assert partial.context["cl"].result_count == 0  # no substring scan
    assert not any(" like " in q["sql"].lower() for q in queries.captured_queries)


def test_the_count_says_more_than_the_cap(admin, ledger, monkeypatch):
    monkeypatch.setattr(adminfilters, "COUNT_CAP", 25)
    page = admin.get(LIST)
    assert page.context["cl"].result_count == 26
    assert "more than 25 usage records" in page.content.decode()
