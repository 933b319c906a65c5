"""The provider availability page (reports/availability.py) after the scenario's outage,
replayed through the real gateway and read through the managers' sign-in form."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from reports.availability import availability
from reports.filters import parse_filters
from reports.models import CircuitEvent
from tests.reports.conftest import make_record, write_ledger
from tests.reports.scenario import outage_world, replay_outage, signed_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def outage(settings, gateway_server, openai_server, anthropic_server, monkeypatch, redis_sync):
    settings.GATEWAY = {**settings.GATEWAY, "CIRCUIT_FAILURES": 2}
    world = outage_world(openai_server, anthropic_server, monkeypatch)
    replay_outage(gateway_server, world, openai_server, redis_sync, requests=6)
    # A refusal in the same range: a client turned away by its budget, not by a provider.
    write_ledger([make_record(world["team"], status="refused", http_status=429, cost_usd="0")])
    return world


def cells(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
        for r in rows
    ]


def test_the_outage_counts_against_openai_even_though_every_client_was_answered(outage, staff):
    page = signed_in("boss", "pw-boss-123").get("/reports/availability/?range=24h")
    assert page.status_code == 200
    html = page.content.decode()
    by_provider = {row[0]: row for row in cells(html, "provider-attempts")}
    # calls, failures, failure rate, rescued, not rescued, rescues made, skipped
    assert by_provider["openai"][1:] == ["3", "2", "66.7 %", "2", "0", "0", "10"]
    assert by_provider["anthropic"][1:] == ["6", "0", "0.0 %", "0", "0", "6", "0"]
    # As the clients saw it: 7 of 8 answered, the refusal apart, no failure.
    assert re.search(r"Answered</span><span class=\"value\">87.5 %", html)
    assert re.search(r"Refused</span><span class=\"value\">12.5 %", html)
    assert re.search(r"Failed</span><span class=\"value\">0.0 %", html)


def test_the_outage_window_runs_from_the_opening_to_the_probe_and_costs_its_fallbacks(outage):
    kinds = list(CircuitEvent.objects.order_by("opened_at").values_list("provider", "kind"))
    assert kinds == [("openai", "opened"), ("openai", "closed")]
    f = parse_filters({"range": "24h"}, allowed=None)
    (window,) = availability(f)["outages"]
    assert window["provider"] == "openai" and not window["ongoing"]
    assert (window["requests"], window["rescued"], window["failed"]) == (6, 6, 0)
    # Six answers at claude-sonnet's price, against the same tokens at gpt-4o-mini's.
    assert window["fallback_cost_usd"] > 0
    assert window["extra_cost_usd"] == window["fallback_cost_usd"] - window["first_choice_cost_usd"]
    assert window["first_choice_cost_usd"] * 20 < window["fallback_cost_usd"]
    minutes = window["minute_detail"]
    assert sum(m["rescued"] for m in minutes) == 6
    assert sum(m["failed"] for m in minutes) == 1  # the request that opened the circuit
    assert sum(m["skipped"] for m in minutes) == 5


def test_an_outage_still_open_runs_to_now_and_one_older_than_48_hours_has_no_minutes(world):
    now = timezone.now()
    CircuitEvent.objects.create(provider="sim", opened_at=now - dt.timedelta(hours=3))
    CircuitEvent.objects.create(provider="old", opened_at=now - dt.timedelta(days=4))
    CircuitEvent.objects.create(
        provider="old", opened_at=now - dt.timedelta(days=3, hours=23), kind="closed"
    )
    f = parse_filters({"range": "7d"}, allowed=None)
    outages = {o["provider"]: o for o in availability(f)["outages"]}
    assert outages["sim"]["ongoing"] and len(outages["sim"]["minute_detail"]) >= 180
    assert outages["old"]["minutes_long"] == 60 and outages["old"]["minute_detail"] == []
    assert outages["old"]["fallback_cost_usd"] == Decimal(0)


def test_an_empty_range_says_why_it_is_empty(world, staff):
    html = signed_in("boss", "pw-boss-123").get("/reports/availability/").content.decode()
    assert "No request reached a provider in this range." in html
    assert "No circuit breaker opened in this range" in html


def test_the_json_twin_gives_the_same_figures(outage, staff):
    reader = signed_in("boss", "pw-boss-123")
    body = reader.get("/reports/api/availability?range=24h").json()
    assert body["clients"]["answered"] == 7 and body["clients"]["refused"] == 1
    (window,) = body["outages"]
    assert window["provider"] == "openai" and window["rescued"] == 6
    assert Decimal(window["extra_cost_usd"]) > 0
