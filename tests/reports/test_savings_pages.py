"""The savings a manager reads, proven on their path: sign in through the real form at
/reports/login/ (CSRF enforced), open the pages, and compare every figure with a count made
request by request from the ledger rows, to the cent. The world is the founding scenario's
(tests/reports/seed_scenario.py), whose route named `default` starts with gpt-4o-mini: the
figures must not depend on that name."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import Baseline, RouteRule, Team
from reports.templatetags.report_format import usd
from tests.factories import make_budget
from tests.reports.seed_scenario import independent_count
from tests.reports.signin import CSRF, sign_in

pytestmark = pytest.mark.django_db


def card(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}">([^<]+)<', html).group(1)


def test_the_overview_shows_positive_savings_that_match_an_independent_count(scenario, manager):
    expected = independent_count(scenario["records"])
    assert expected["routing"] > 0 and expected["cache"] > 0

    html = manager.get("/reports/").content.decode()

    assert card(html, "saved-routing") == usd(expected["routing"])
    assert card(html, "saved-cache") == usd(expected["cache"])
    assert card(html, "saved-total") == usd(expected["total"])
    assert card(html, "spend-in-range") == usd(expected["spend"])
    assert card(html, "fallback-extra") == usd(expected["fallback"])
    assert not card(html, "saved-routing").startswith("-")
    percent = (expected["total"] * 100 / expected["baseline"]).quantize(Decimal("0.1"))
    headline = re.sub(r"<[^>]+>", "", re.search(r'id="headline">(.*?)</p>', html, re.S).group(1))
    assert headline.startswith(
        f"This month: {usd(expected['spend'])} spent, {usd(expected['total'])} ({percent} %) "
        "less than the baseline"
    )
    # Each figure's definition is one click away, on the page itself.
    for anchor in ("def-routing", "def-cache", "def-total", "def-baseline", "def-requests"):
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html


def test_the_json_twin_agrees_to_the_unit_of_account(scenario, manager):
    expected = independent_count(scenario["records"])
    savings = manager.get("/reports/api/overview").json()["savings"]
    # Summed tokens are priced once: at most 1e-10 USD per request from the per-row sum.
    tolerance = Decimal("1e-10") * len(scenario["records"])
    for key in ("routing", "cache", "total", "spend"):
        assert abs(Decimal(savings[f"{key}_usd"]) - expected[key]) <= tolerance, key


def test_renaming_the_default_route_changes_nothing(scenario, manager):
    before = manager.get("/reports/api/overview").json()["savings"]
    RouteRule.objects.filter(name="default").update(name="anything-else")
    assert manager.get("/reports/api/overview").json()["savings"] == before


def test_a_team_baseline_overrides_the_global_default(scenario, manager):
    chat = Team.objects.get(name="chat")
    Baseline.objects.create(team=chat, model=scenario["models"]["gpt-4o-mini"])
    chat_records = [r for r in scenario["records"] if r.team_id == chat.id]
    others = [r for r in scenario["records"] if r.team_id != chat.id]
    expected = independent_count(chat_records, "gpt-4o-mini")["total"]
    expected += independent_count(others)["total"]

    html = manager.get("/reports/").content.decode()

    assert card(html, "saved-total") == usd(expected)
    chat_only = manager.get("/reports/?team=chat").content.decode()
    assert "gpt-4o-mini, no cache" in chat_only


def test_the_month_table_names_features_by_team_and_projects_month_end(scenario, manager):
    html = manager.get("/reports/").content.decode()
    table = re.search(r'id="month-table">(.*?)</section>', html, re.S).group(1)
    # Two teams have a feature called `search`: each keeps its own row.
    assert "chat/search" in table and "data/search" in table
    assert "Projected month-end" in table


def test_every_page_defines_requests_once(scenario, manager):
    for url in ("/reports/", "/reports/spend/", "/reports/models/", "/reports/cache/"):
        html = manager.get(url).content.decode()
        assert html.count('id="def-requests"') == 1, url


def test_this_month_and_last_month_are_per_day_and_never_reach_the_future(scenario, manager):
    now = timezone.now().astimezone(dt.UTC)
    this = manager.get("/reports/api/overview?range=this-month").json()
    assert this["filters"]["granularity"] == "day"
    assert this["labels"][0] == f"{now:%Y-%m}-01"
    assert this["labels"][-1] == f"{now:%Y-%m-%d}"  # today, and no day after it
    last = manager.get("/reports/api/overview?range=last-month").json()
    first_of_month = now.replace(day=1).date()
    last_month_end = first_of_month - dt.timedelta(days=1)
    assert len(last["labels"]) == last_month_end.day
    assert last["labels"][-1] == last_month_end.isoformat()
    page = manager.get("/reports/?range=this-month").content.decode()
    assert '<option value="this-month" selected>This month</option>' in page


def test_a_custom_range_reaching_into_the_future_stops_at_the_current_hour(scenario, manager):
    today = timezone.now().astimezone(dt.UTC).date()
    url = f"/reports/api/spend?range=custom&start={today}&end={today + dt.timedelta(days=5)}"
    body = manager.get(url).json()
    assert body["filters"]["granularity"] == "day"  # six days asked: per day
    assert body["labels"][-1] == today.isoformat()
    one_day = manager.get(f"/reports/api/spend?range=custom&start={today}&end={today}").json()
    current_hour = timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%d %H:00")
    assert one_day["labels"][-1] == current_hour


def test_features_of_the_same_name_stay_apart_and_the_csv_has_a_team_column(scenario, manager):
    body = manager.get("/reports/api/spend?by=feature").json()
    names = {s["name"] for s in body["series"]}
    assert {"chat/search", "data/search"} <= names and "search" not in names
    rows = list(csv.reader(io.StringIO(manager.get("/reports/spend.csv?by=feature").text)))
    assert rows[0][:3] == ["bucket", "team", "feature"]
    assert {(r[1], r[2]) for r in rows[1:] if r[2].endswith("/search")} == {
        ("chat", "chat/search"),
        ("data", "data/search"),
    }
    page = manager.get("/reports/").content.decode()
    assert '<option value="data/search">data/search</option>' in page
    only = manager.get("/reports/api/overview?feature=data/search").json()["totals"]["requests"]
    both = manager.get("/reports/api/overview?feature=search").json()["totals"]["requests"]
    assert 0 < only < both


def test_the_model_mix_splits_the_same_savings_per_model(scenario, manager):
    overview = manager.get("/reports/api/overview").json()["savings"]
    mix = manager.get("/reports/api/models").json()["models"]
    assert sum(Decimal(m["saved_by_routing_usd"]) for m in mix) == Decimal(overview["routing_usd"])
    assert sum(Decimal(m["saved_by_cache_usd"]) for m in mix) == Decimal(overview["cache_usd"])
    page = manager.get("/reports/models/").content.decode()
    assert 'href="#def-routing">Saved by routing</a>' in page
    assert "gpt-4o, no cache" in page  # the baseline, named in the definitions


@pytest.mark.parametrize(
    "amount, shown",
    [
        ("1.35", "$1.35"),
        ("0.7643", "$0.76"),  # cents everywhere, never "$0.7643" beside "$1.35"
        ("0", "$0.00"),
        ("0.00002", "$0.00002"),  # a tiny limit is readable, not "$0.00"
        ("0.0000213", "$0.000021"),  # a tiny amount is never "$0.0000"
        ("-6.1", "-$6.10"),
        ("1234.5", "$1,234.50"),
    ],
)
def test_money_has_one_precision_and_never_reads_as_zero_when_it_is_not(amount, shown):
    assert usd(Decimal(amount)) == shown


def test_a_tiny_budget_limit_is_readable_on_the_overview(scenario, manager):
    # Limits are stored to 4 decimals (budgets/models.py): the smallest is $0.0001.
    make_budget(Team.objects.get(name="data"), daily_limit_usd="0.0004")
    html = manager.get("/reports/?team=data").content.decode()
    assert "/ $0.0004" in html and "/ $0.00<" not in html


def test_an_admin_sets_the_baseline_in_the_admin_and_the_overview_follows(scenario, db):
    from django.contrib.auth.models import User

    User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    admin = sign_in("root", "pw-root-123", path="/admin/login/")
    Baseline.objects.all().delete()
    form = admin.get("/admin/gateway/baseline/add/").content.decode()
    token = CSRF.search(form).group(1)
    mini = scenario["models"]["gpt-4o-mini"]
    answer = admin.post(
        "/admin/gateway/baseline/add/",
        {"team": "", "model": mini.pk, "cache": "", "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    expected = independent_count(scenario["records"], "gpt-4o-mini")
    html = admin.get("/reports/").content.decode()
    assert card(html, "saved-total") == usd(expected["total"])
    assert "gpt-4o-mini, no cache" in html
