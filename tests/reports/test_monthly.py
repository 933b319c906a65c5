"""The one-page monthly report, read as its readers read it: a manager signed in through the
real form (page, CSV, JSON), and a team's budget contacts by e-mail from the Celery task.
Every figure is checked against a count made request by request from the ledger rows, and
against the dashboards' own figures for the same month. Dates are relative to the clock, so
the tests pass on any day (including the 1st, whose month so far may hold a single hour)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from budgets.models import BudgetAlert
from gateway.models import Baseline, Team
from reports import monthly
from reports.access import MANAGERS_GROUP
from reports.models import ManagerScope
from reports.templatetags.report_format import usd
from tests.factories import make_budget, make_feature, make_team
from tests.reports.conftest import make_record, write_ledger
from tests.reports.seed_scenario import (
    independent_count,
    prices,
)
from tests.reports.signin import sign_in

pytestmark = pytest.mark.django_db


def this_month() -> monthly.ReportMonth:
    return monthly.month_of(timezone.now())


def text_of(html: str, element_id: str) -> str:
    section = re.search(rf'id="{element_id}">(.*?)</(p|section)>', html, re.S).group(1)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section)).strip()


def last_month_records(team, feature, *, n: int, served="gpt-4o-mini", day: int = 3) -> list:
    """`n` answered requests on one day of the previous month, priced as the drainer does."""
    start = this_month().previous().start + dt.timedelta(days=day - 1, hours=12)
    records = []
    for i in range(n):
        usage_in, usage_out = 1000 + i, 200
        from gateway.money import cost_of
        from gateway.providers.base import Usage

        cost = cost_of(Usage(usage_in, usage_out), prices(served)).usd
        records.append(
            make_record(
                team,
                feature,
                created_at=start + dt.timedelta(seconds=i),
                served_model=served,
                requested_model="auto",
                input_tokens=usage_in,
                output_tokens=usage_out,
                cost_usd=cost,
            )
        )
    return write_ledger(records)


# --- The page ----------------------------------------------------------------------------


def test_this_months_report_agrees_with_an_independent_count_and_the_overview(scenario, manager):
    expected = independent_count(scenario["records"])
    month = this_month().key

    html = manager.get(f"/reports/monthly/?month={month}").content.decode()

    headline = text_of(html, "monthly-headline")
    percent = (expected["total"] * 100 / expected["baseline"]).quantize(Decimal("0.1"))
    assert headline.startswith(f"{month} so far")
    assert (
        f"{usd(expected['spend'])} spent, {usd(expected['total'])} ({percent} %) less than "
        "the baseline (gpt-4o, no cache)"
    ) in headline
    cards = text_of(html, "monthly-savings")
    for label, key in (
        ("Spend", "spend"),
        ("Saved by routing", "routing"),
        ("Saved by the cache", "cache"),
        ("Fallback extra cost", "fallback"),
        ("Total saved", "total"),
    ):
        assert f"{label} {usd(expected[key])}" in cards, label
    # The dashboards' overview shows the same month with the same figures.
    overview = manager.get("/reports/api/overview").json()["month"]
    report = manager.get(f"/reports/api/monthly?month={month}").json()["savings"]
    for key in ("spend_usd", "routing_usd", "cache_usd", "total_usd", "fallback_extra_usd"):
        assert report[key] == overview[key], key


def test_the_report_counts_requests_cache_hits_and_model_shares(scenario, manager):
    records = scenario["records"]
    data = manager.get(f"/reports/api/monthly?month={this_month().key}").json()

    totals = data["totals"]
    hits = sum(1 for r in records if r.cache == "hit")
    assert totals["requests"] == len(records)
    assert totals["cache_hits"] == hits
    assert totals["refused"] == sum(1 for r in records if r.status == "refused")
    assert totals["cache_hit_rate"] == round(hits / len(records), 4)
    served = [r for r in records if r.served_model]
    shares = {m["model"]: m["request_share"] for m in data["models"]}
    for model in {r.served_model for r in served}:
        count = sum(1 for r in served if r.served_model == model)
        assert shares[model] == round(count / len(served), 4), model
    clients = data["clients"]
    assert clients["requests"] == len(records)
    assert clients["answered"] + clients["refused"] + clients["failed"] == len(records)


def test_cost_per_feature_names_each_feature_by_team_and_sums_to_its_team(scenario, manager):
    chat = Team.objects.get(name="chat")
    make_budget(chat, monthly_limit_usd="500")
    data = manager.get(f"/reports/api/monthly?month={this_month().key}").json()

    rows = data["features"]
    names = [r["name"] for r in rows]
    assert "chat/search" in names and "data/search" in names  # two teams' `search`
    for team in ("chat", "content", "platform", "data"):
        team_row = next(r for r in rows if r["is_team"] and r["team"] == team)
        members = [r for r in rows if not r["is_team"] and r["team"] == team]
        assert Decimal(team_row["spend_usd"]) == sum(Decimal(r["spend_usd"]) for r in members)
        assert team_row["requests"] == sum(r["requests"] for r in members)
        spent = sum((r.cost_usd for r in scenario["records"] if r.team_id == _id(team)), Decimal(0))
        assert Decimal(team_row["spend_usd"]) == spent
    chat_row = next(r for r in rows if r["is_team"] and r["team"] == "chat")
    assert Decimal(chat_row["limit_usd"]) == Decimal("500")
    assert "projected_usd" in chat_row  # the month is not over: its month-end is projected


def _id(team_name: str) -> int:
    return Team.objects.get(name=team_name).pk


def test_the_default_month_is_the_last_complete_one(scenario, manager):
    chat = Team.objects.get(name="chat")
    chatbot = chat.features.get(name="chatbot")
    earlier = last_month_records(chat, chatbot, n=7)

    data = manager.get("/reports/api/monthly").json()

    assert data["month"] == this_month().previous().key
    assert data["complete"] is True
    assert data["totals"]["requests"] == 7  # none of this month's scenario
    spent = sum((r.cost_usd for r in earlier), Decimal(0))
    assert Decimal(data["savings"]["spend_usd"]) == spent
    assert data["models"][0]["model"] == "gpt-4o-mini"
    assert all("projected_usd" not in r for r in data["features"])  # a finished month
    html = manager.get("/reports/monthly/").content.decode()
    assert f"Monthly report: {data['month']}" in html
    assert "so far" not in text_of(html, "monthly-headline")


def test_budget_incidents_and_alerts_of_the_month_are_listed(scenario, manager):
    from reports.models import Incident

    chat = Team.objects.get(name="chat")
    budget = make_budget(chat, monthly_limit_usd="1", alert_emails="ops@example.com")
    now = timezone.now()
    Incident.objects.create(
        kind=Incident.Kind.BUDGET_STOP,
        dedupe="t-1",
        started_at=now - dt.timedelta(minutes=30),
        ended_at=now - dt.timedelta(minutes=10),
        team=chat,
        requests=12,
        requests_refused=12,
        spend_usd=Decimal("1"),
        summary="The monthly budget of chat stopped it.",
    )
    BudgetAlert.objects.create(
        budget=budget,
        window="monthly",
        window_key=this_month().key,
        threshold=80,
        spend_usd=Decimal("0.8"),
        limit_usd=Decimal("1"),
        channel=BudgetAlert.Channel.EMAIL,
        status=BudgetAlert.Status.SENT,
    )

    html = manager.get(f"/reports/monthly/?month={this_month().key}").content.decode()

    section = text_of(html, "monthly-budget-incidents")
    assert "hard budget stopped a feature" in section
    assert "The monthly budget of chat stopped it." in section
    assert "chat (the team's budget) monthly 80 % 1" in section


def test_a_manager_sees_only_their_teams(scenario, staff, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("lea", password="pw-lea-12345")
    user.groups.add(Group.objects.get_or_create(name=MANAGERS_GROUP)[0])
    scope = ManagerScope.objects.create(user=user)
    scope.teams.add(Team.objects.get(name="chat"))
    client = sign_in("lea", "pw-lea-12345")
    month = this_month().key

    data = client.get(f"/reports/api/monthly?month={month}").json()
    assert {r["team"] for r in data["features"]} == {"chat"}
    # Another team's name gives nothing, not that team's figures.
    other = client.get(f"/reports/api/monthly?month={month}&team=data").json()
    assert other["features"] == [] and other["totals"]["requests"] == 0
    html = client.get(f"/reports/monthly/?month={month}").content.decode()
    assert "data/search" not in html


@pytest.mark.parametrize(
    "query, message",
    [
        ("month=2026-13", "month must look like 2026-11"),
        ("month=november", "month must look like 2026-11"),
        ("month=1999-12", "month must be between 2000-01"),
        ("month=9999-01", "month must be between 2000-01"),
        ("month=0000-01", "month must be between 2000-01"),  # no year 0: used to be a 500
        ("month=2026-11%00", "month must look like 2026-11"),
        ("team=%00", "team must not contain control characters"),
        ("team=" + "x" * 65, "team must be a name of at most 64 characters"),
    ],
)
def test_a_bad_month_or_team_is_a_clear_400_on_each_format(manager, query, message):
    page = manager.get(f"/reports/monthly/?{query}")
    assert page.status_code == 400 and message in page.content.decode()
    answer = manager.get(f"/reports/api/monthly?{query}")
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert manager.get(f"/reports/monthly.csv?{query}").status_code == 400


def test_a_team_name_never_reaches_the_csv_header_as_typed(scenario, manager):
    answer = manager.get(f'/reports/monthly.csv?month={this_month().key}&team=a"b;c')
    assert answer.status_code == 200
    assert answer["Content-Disposition"].endswith(f'gateway-report-{this_month().key}-a_b_c.csv"')


def test_a_month_after_the_current_one_is_refused(manager):
    following = this_month().following().key
    answer = manager.get(f"/reports/api/monthly?month={following}")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "month"


def test_strangers_are_sent_to_sign_in(client):
    assert client.get("/reports/monthly/").status_code == 302
    assert client.get("/reports/api/monthly").status_code in (401, 403)
    assert client.get("/reports/monthly.csv").status_code == 302


# --- Exports -----------------------------------------------------------------------------


def test_the_csv_has_one_row_per_feature_with_its_team_and_exact_numbers(scenario, manager):
    Baseline.objects.update(model=scenario["models"]["gpt-4o-mini"])  # some savings < 0
    answer = manager.get(f"/reports/monthly.csv?month={this_month().key}")
    assert answer["Content-Type"].startswith("text/csv")
    assert f"gateway-report-{this_month().key}.csv" in answer["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))

    assert list(rows[0])[:3] == ["month", "team", "feature"]
    assert {(r["team"], r["feature"]) for r in rows} >= {("chat", "search"), ("data", "search")}
    spend = sum(Decimal(r["spend_usd"]) for r in rows)
    assert spend == independent_count(scenario["records"])["spend"]
    negative = [r["saved_by_routing_usd"] for r in rows if r["saved_by_routing_usd"][:1] in "-'"]
    assert negative, "a dearer model than the baseline served some feature"
    for value in negative:  # a number a spreadsheet sums, not a quoted formula guard
        assert Decimal(value) < 0
    for r in rows:
        assert "E" not in r["spend_usd"]  # fixed notation, never 0E-10


def test_the_json_export_holds_every_section(scenario, manager):
    data = manager.get(f"/reports/api/monthly?month={this_month().key}").json()
    for key in (
        "savings",
        "totals",
        "models",
        "clients",
        "outages",
        "budget_incidents",
        "budget_alerts",
        "features",
        "baseline",
    ):
        assert key in data, key
    assert data["baseline"] == "gpt-4o, no cache"


# --- The monthly e-mail ------------------------------------------------------------------


def test_the_task_mails_last_months_report_once_to_each_teams_budget_contacts(
    db, redis_sync, mailoutbox
):
    acme, quiet, nobody = make_team("acme"), make_team("quiet"), make_team("nobody")
    chat = make_feature(acme, "chat")
    make_budget(acme, monthly_limit_usd="100", alert_emails="ops@example.com, cfo@example.com")
    make_budget(quiet, monthly_limit_usd="1", alert_emails="quiet@example.com")
    last_month_records(acme, chat, n=4)
    last_month_records(nobody, make_feature(nobody, "x"), n=2)  # no contact: no e-mail
    # quiet made no request last month: no e-mail either.
    first_of_month = this_month().start + dt.timedelta(hours=settings.DIGEST_HOUR_UTC)

    with time_machine.travel(first_of_month, tick=True):
        assert monthly.send_monthly_reports(redis=redis_sync) == 1
        assert monthly.send_monthly_reports(redis=redis_sync) == 0  # claimed: sent once

    (mail,) = mailoutbox
    key = this_month().previous().key
    assert mail.to == ["ops@example.com", "cfo@example.com"]
    assert mail.subject == f"LLM gateway monthly report for acme, {key}"
    assert "Requests: 4 (4 served, 0 cache hits, 0 refused, 0 failed)" in mail.body
    assert "  acme, all features: $0.0011 for 4 requests (0.0 % of a $100.00 monthly budget)" in (
        mail.body
    )
    assert "    acme/chat: $0.0011 for 4 requests\n" in mail.body
    html, mime = mail.alternatives[0]
    assert mime == "text/html" and f"monthly report {key}, team acme" in html
    name, table, kind = mail.attachments[0]
    assert name == f"gateway-acme-{key}.csv" and kind == "text/csv"
    assert [r["feature"] for r in csv.DictReader(io.StringIO(table))] == ["chat"]


def test_a_failed_send_gives_its_claim_back_so_the_retry_sends(db, redis_sync, mailoutbox):
    acme = make_team("acme")
    make_budget(acme, monthly_limit_usd="100", alert_emails="ops@example.com")
    last_month_records(acme, make_feature(acme, "chat"), n=1)
    from unittest import mock

    with mock.patch(
        "django.core.mail.EmailMultiAlternatives.send", side_effect=OSError("smtp down")
    ):
        with pytest.raises(OSError):
            monthly.send_monthly_reports(redis=redis_sync)
    assert monthly.send_monthly_reports(redis=redis_sync) == 1
    assert len(mailoutbox) == 1


def test_celery_beat_sends_it_on_the_first_of_each_month():
    entry = settings.CELERY_BEAT_SCHEDULE["monthly-report"]
    assert entry["task"] == "reports.tasks.send_monthly_reports"
    assert entry["schedule"].day_of_month == {1}
    from reports.tasks import send_monthly_reports

    assert send_monthly_reports.name == entry["task"]


def test_parse_month_defaults_and_bounds():
    now = dt.datetime(2027, 1, 15, 10, tzinfo=dt.UTC)
    assert monthly.parse_month("", now).key == "2026-12"
    assert monthly.parse_month("2027-01", now).key == "2027-01"
    assert monthly.parse_month("2024-02", now).end == dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    with pytest.raises(monthly.FilterError):
        monthly.parse_month("2027-02", now)


def test_a_loss_reads_as_a_loss_in_the_feature_rows(scenario, manager):
    # gpt-4o-mini as the baseline: features served by dearer models saved less than nothing.
    Baseline.objects.update(model=scenario["models"]["gpt-4o-mini"])
    data = manager.get(f"/reports/api/monthly?month={this_month().key}").json()
    losing = next(r for r in data["features"] if Decimal(r["total_usd"]) < 0)
    html = manager.get(f"/reports/monthly/?month={this_month().key}").content.decode()
    row = re.search(rf"<td>{re.escape(losing['name'])}</td>(.*?)</tr>", html, re.S).group(1)
    assert f"({Decimal(losing['percent']):.1f} %)" in row and "(-" in row


def test_past_the_table_limit_the_page_sums_the_other_teams_and_the_csv_has_them_all(
    scenario, manager, monkeypatch
):
    from reports import month as month_module

    monkeypatch.setattr(month_module, "TABLE_TEAMS", 2)
    key = this_month().key
    data = manager.get(f"/reports/api/monthly?month={key}").json()
    teams = [r for r in data["features"] if r["is_team"]]
    assert len(teams) == 4  # the export: every team
    ranked = sorted(teams, key=lambda r: (-Decimal(r["spend_usd"]), r["team"]))
    html = manager.get(f"/reports/monthly/?month={key}").content.decode()
    table = text_of(html, "monthly-features")
    for shown in ranked[:2]:
        assert f"{shown['team']}/" in table
    for hidden in ranked[2:]:
        assert f"{hidden['team']}/" not in table
    other = sum((Decimal(r["spend_usd"]) for r in ranked[2:]), Decimal(0))
    assert f"2 other teams {sum(r['requests'] for r in ranked[2:]):,}" in table
    assert usd(other) in table
    rows = list(
        csv.DictReader(
            io.StringIO(manager.get(f"/reports/monthly.csv?month={key}").content.decode())
        )
    )
    assert {r["team"] for r in rows} == {r["team"] for r in teams}
    # The overview's month table: the same limit, the same sum.
    overview = manager.get("/reports/api/overview").json()["month_table"]
    assert overview["other_teams"] == 2
    assert overview["rows"][-1]["name"] == "2 other teams"
    assert Decimal(overview["rows"][-1]["spend_usd"]) == other
