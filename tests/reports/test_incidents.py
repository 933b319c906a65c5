"""Incidents as records (reports/incidents.py): the scenario's runaway loop, retry storm and
OpenAI outage replayed through the real gateway with the `openai` SDK, found by the
detector task, shown on the incidents page and the overview (read through the sign-in form)
and sent to the alert channels once."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import openai
import pytest
from django.utils import timezone

from budgets.models import BudgetAlert
from gateway import ledger
from reports import incidents, tasks
from reports.models import Incident
from tests.factories import make_budget, make_feature, make_key
from tests.processes import wait_for
from tests.reports.conftest import make_record, write_ledger
from tests.reports.scenario import HELLO, outage_world, replay_outage, signed_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def replayed(settings, gateway_server, openai_server, anthropic_server, monkeypatch, redis_sync):
    settings.GATEWAY = {**settings.GATEWAY, "CIRCUIT_FAILURES": 2}
    settings.INCIDENTS = {"SPIKE_MIN_USD": "0.00001", "BURST_MIN": 20}
    settings.ADMINS = [("Ops", "ops@example.com")]
    world = outage_world(openai_server, anthropic_server, monkeypatch)
    team = world["team"]
    agent = make_feature(team, "research-agent")
    budget = make_budget(
        team, agent, daily_limit_usd="0.001", hard=True, alert_emails="research@example.com"
    )
    _, agent_secret = make_key(team, agent)
    sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=agent_secret,
        max_retries=0,
        default_headers={"X-Gateway-Cache-TTL": "0"},
    )
    # The runaway agent loop: distinct prompts, until the hard budget stops it, then three
    # more tries that are refused.
    answered = refused = 0
    for step in range(200):
        try:
            sdk.chat.completions.create(
                model="gpt-4o",  # no fallback: the reservation is gpt-4o's own worst case
                messages=[{"role": "user", "content": f"Research step {step}"}],
                max_tokens=20,
            )
            answered += 1
        except openai.RateLimitError:
            refused += 1
            if refused == 4:
                break
    assert answered > 3 and refused == 4
    # The retry storm: one key sends the same request 30 times; the cache answers.
    chat_sdk = openai.OpenAI(
        base_url=gateway_server.base_url,
        api_key=world["secret"],
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot"},
    )
    for _ in range(30):
        chat_sdk.chat.completions.create(model="gpt-4o-mini", messages=HELLO, temperature=0)
    ledger.drain()
    replay_outage(gateway_server, world, openai_server, redis_sync, requests=4)
    wait_for(
        lambda: BudgetAlert.objects.filter(budget=budget, threshold=100).exists(),
        timeout=10,
        what='the "budget exhausted" alert',
    )
    return {**world, "agent": agent, "budget": budget, "answered": answered}


def test_the_detector_opens_one_incident_per_occurrence(replayed, mailoutbox):
    created = tasks.detect_incidents()
    # Both features spent far above their (empty) history: the agent's loop, and the
    # chatbot's answers at claude-sonnet's price during the outage.
    spikes = {i.feature.name: i for i in Incident.objects.filter(kind="spend_spike")}
    assert set(spikes) == {"research-agent", "chatbot"}
    by_kind = {i.kind: i for i in Incident.objects.exclude(kind="spend_spike")}
    assert set(by_kind) == {"budget_stop", "identical_burst", "outage"}
    assert created == 5

    stop = by_kind["budget_stop"]
    assert (stop.team, stop.feature, stop.budget) == (
        replayed["team"],
        replayed["agent"],
        replayed["budget"],
    )
    assert stop.api_key is not None and stop.requests_refused == 4
    assert Decimal(0) < stop.spend_usd <= Decimal("0.001")  # stopped short of the limit
    assert stop.ended_at is None  # refused a moment ago: still going on

    spike = spikes["research-agent"]
    assert spike.requests == replayed["answered"] + 4 and spike.requests_refused == 4

    burst = by_kind["identical_burst"]
    assert burst.feature.name == "chatbot" and burst.requests == 29  # the first was a miss

    outage = by_kind["outage"]
    assert outage.provider == "openai" and outage.ended_at is not None
    assert outage.requests == 4 and outage.requests_refused == 0 and outage.spend_usd > 0

    # Announced once: the budget stop by its own "budget exhausted" alert, not again here.
    subjects = [m.subject for m in mailoutbox]
    assert sum(s.startswith("Budget exhausted") for s in subjects) == 1
    incident_mails = [m for m in mailoutbox if m.subject.startswith("Incident")]
    # The agent's spike goes to its budget's address; the chatbot has no budget channel.
    assert [m.to for m in incident_mails if "[Django]" not in m.subject] == [
        ["research@example.com"]
    ]
    assert [m.to for m in mailoutbox if "[Django]" in m.subject and "Incident" in m.subject] == [
        ["ops@example.com"]
    ]  # the outage: every team's, to the ADMINS
    assert Incident.objects.filter(alerted_at__isnull=True).get() == stop
    assert spikes["chatbot"].pk not in [stop.pk]

    # A second run updates the same records and sends nothing new.
    sent = len(mailoutbox)
    assert tasks.detect_incidents() == 0
    assert Incident.objects.count() == 5 and len(mailoutbox) == sent


def test_the_incidents_page_and_the_overview_show_them(replayed, staff):
    tasks.detect_incidents()
    reader = signed_in("boss", "pw-boss-123")
    html = reader.get("/reports/incidents/").content.decode()
    table = re.search(r'<table id="incidents-table">(.*?)</table>', html, re.S).group(1)
    assert table.count("<tr class=") == 5
    assert "hard budget stopped a feature" in table and "research-agent" in table
    assert "provider outage: openai" in table and "every team" in table
    assert "burst of identical requests from one key" in table
    alert = BudgetAlert.objects.filter(threshold=100).first()
    assert f'href="/admin/budgets/budgetalert/{alert.id}/change/"' in table
    assert "going on" in table

    overview = reader.get("/reports/").content.decode()
    panel = re.search(
        r'<section class="panel" id="overview-incidents">(.*?)</section>', overview, re.S
    )
    assert 'href="/reports/incidents/' in panel.group(1)
    assert panel.group(1).count("<tr class=") == 5


def test_a_feature_spending_at_its_usual_rate_opens_no_spike(world, settings):
    settings.INCIDENTS = {"SPIKE_MIN_USD": "0.5"}
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    usual = [
        make_record(
            world["acme"], world["acme_chat"], created_at=hour - dt.timedelta(days=d), cost_usd="2"
        )
        for d in range(1, 8)
    ]
    write_ledger(
        [*usual, make_record(world["acme"], world["acme_chat"], created_at=hour, cost_usd="3")]
    )
    assert incidents.spend_spikes(now) == []
    write_ledger([make_record(world["acme"], world["acme_chat"], created_at=hour, cost_usd="8")])
    [(dedupe, spike)] = incidents.spend_spikes(now)
    assert spike["spend_usd"] == Decimal("11") and "usual $2.00" in spike["summary"]


def test_an_empty_range_says_why_there_is_no_incident(world, staff):
    html = signed_in("boss", "pw-boss-123").get("/reports/incidents/").content.decode()
    assert "No incident in this range" in html


def test_incidents_are_read_only_in_the_admin(admin_client):
    assert admin_client.get("/admin/reports/incident/").status_code == 200
    assert admin_client.get("/admin/reports/incident/add/").status_code == 403


def test_an_outage_longer_than_the_lookback_is_measured_from_its_start(world):
    from reports.models import CircuitEvent

    now = timezone.now()
    start = now - dt.timedelta(hours=5)
    CircuitEvent.objects.create(provider="sim", opened_at=start)
    failed = {"model": "small", "provider": "sim", "error": "circuit open"}
    served = {"model": "large", "provider": "other", "error": ""}
    write_ledger(
        [
            make_record(
                world["acme"],
                created_at=start + dt.timedelta(minutes=10 + i),
                attempts=2,
                attempt_log=[failed, served],
                served_model="large",
                provider="other",
                cost_usd="0.01",
            )
            for i in range(3)
        ]
    )
    incidents.detect(now)
    outage = Incident.objects.get(kind="outage")
    assert (outage.started_at, outage.ended_at, outage.requests) == (start, None, 3)
    assert outage.spend_usd == Decimal("0.03")
