from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.models import Baseline
from reports import rollups
from tests.factories import make_budget
from tests.reports.conftest import make_record, write_ledger

pytestmark = pytest.mark.django_db


@pytest.fixture
def traffic(world):
    now = timezone.now()
    w = world
    write_ledger(
        [
            make_record(w["acme"], w["acme_chat"], created_at=now, cost_usd="0.6", latency_ms=100),
            make_record(
                w["acme"],
                w["acme_chat"],
                created_at=now,
                cache="hit",
                saved_usd="0.6",
                latency_ms=2,
            ),
            make_record(
                w["acme"],
                w["acme_search"],
                created_at=now - dt.timedelta(days=2),
                cost_usd="0.2",
                served_model="large",
                latency_ms=900,
                attempts=2,
            ),
            make_record(
                w["globex"],
                w["globex_chat"],
                created_at=now,
                status="error",
                served_model="large",
                latency_ms=300,
            ),
        ]
    )
    rollups.record_circuit_events(
        [{"provider": "sim", "opened_at": now.isoformat(), "reason": "consecutive_failures"}]
    )
    make_budget(w["acme"], daily_limit_usd="1", monthly_limit_usd="100", alert_thresholds=[50, 80])
    return w


@pytest.fixture
def reader(client, staff):
    client.force_login(staff)
    return client


@pytest.mark.parametrize(
    "url, expected",
    [
        ("/reports/", b"Saved by the cache"),
        ("/reports/spend/", b"Download CSV"),
        ("/reports/cache/", b"Hit rate over time"),
        ("/reports/providers/", b"consecutive_failures"),
        ("/reports/models/", b"Share of spend"),
    ],
)
def test_each_page_renders_its_chart_and_data(reader, traffic, url, expected):
    response = reader.get(url)
    assert response.status_code == 200
    assert expected in response.content
    assert b"<canvas" in response.content
    assert b'id="report-data"' in response.content
    assert b"vendor/chartjs/chart.umd.min.js" in response.content


def test_the_overview_totals_come_from_the_rollups(reader, traffic):
    Baseline.objects.create(model=traffic["large"])
    body = reader.get("/reports/api/overview").json()
    totals = body["totals"]
    assert totals["requests"] == 4
    assert totals["spend_usd"] == "0.8000000000"
    # The hit (100 in, 50 out) at the baseline's prices (10 and 30 per Mtok), not at the
    # model that first answered it; the three answered requests' tokens likewise.
    assert body["savings"]["cache_usd"] == "0.0025000000"
    assert body["savings"]["baseline_usd"] == "0.0100000000"
    assert body["savings"]["routing_usd"] == "-0.7925000000"
    assert (totals["cache_hit_rate"], totals["error_rate"], totals["fallback_rate"]) == (
        0.25,
        0.25,
        0.25,
    )
    assert body["filters"]["granularity"] == "day"
    assert len(body["labels"]) == 7


def test_the_overview_shows_budget_utilisation_with_thresholds(reader, traffic):
    budget = reader.get("/reports/api/overview").json()["budgets"][0]
    assert budget["team"] == "acme"
    assert budget["daily"] == {
        "reserved_usd": "0.0000000000",  # nothing in flight
        "spend_usd": "0.6000000000",
        "limit_usd": "1.0000",
        "percent": 60.0,
        "thresholds": [50, 80],
        "crossed": [50],
    }
    page = reader.get("/reports/").content.decode()
    assert 'class="threshold crossed" style="left: 50%"' in page
    assert 'class="threshold" style="left: 80%"' in page


def test_of_many_budgets_the_overview_lists_those_nearest_their_limits(
    reader, traffic, monkeypatch
):
    from reports import budget_overview

    w = traffic
    make_budget(w["acme"], w["acme_chat"], daily_limit_usd="10")  # 0.6 of 10: 6 %
    make_budget(w["globex"], daily_limit_usd="10")  # nothing spent
    monkeypatch.setattr(budget_overview, "TABLE_BUDGETS", 2)
    body = reader.get("/reports/api/overview").json()
    shown = [(b["team"], b["feature"], b["daily"]["percent"]) for b in body["budgets"]]
    assert shown == [("acme", "", 60.0), ("acme", "chatbot", 6.0)]
    assert body["budgets_hidden"] == 1
    # The month: whole days from the daily roll-ups, today from the hourly ones.
    now = timezone.now()
    in_month = (now - dt.timedelta(days=2)).month == now.month
    month = body["budgets"][0]["monthly"]  # the team budget: 100 a month
    assert month["spend_usd"] == ("0.8000000000" if in_month else "0.6000000000")
    page = reader.get("/reports/").content.decode()
    assert "The 2 budgets nearest their limits are shown; 1 more" in page
    only_globex = reader.get("/reports/api/overview?team=globex").json()
    assert [b["team"] for b in only_globex["budgets"]] == ["globex"]
    assert only_globex["budgets_hidden"] == 0


def test_spend_by_model_stacks_per_day(reader, traffic):
    body = reader.get("/reports/api/spend?by=model").json()
    series = {s["name"]: s for s in body["series"]}
    assert series["small"]["total_usd"] == "0.6000000000"
    assert series["large"]["total_usd"] == "0.2000000000"
    assert series["large"]["cost_usd"][-3] == "0.2000000000"  # two days ago
    assert body["total_usd"] == "0.8000000000"


def test_past_the_series_shown_the_spend_chart_sums_the_others_and_the_csv_has_them_all(
    reader, traffic, monkeypatch
):
    from reports import queries

    monkeypatch.setattr(queries, "SERIES_SHOWN", 1)
    body = reader.get("/reports/api/spend?by=feature").json()
    assert [(s["name"], s["total_usd"]) for s in body["series"]] == [
        ("acme/chatbot", "0.6000000000"),
        ("2 other features", "0.2000000000"),
    ]
    assert body["other_series"] == 2 and body["total_usd"] == "0.8000000000"
    assert body["pivot"][-1]["values"] == ["0.6000000000", "0.0000000000"]  # today
    page = reader.get("/reports/spend/?by=feature").content.decode()
    assert '<th class="num">2 other features</th>' in page
    rows = list(csv.DictReader(io.StringIO(reader.get("/reports/spend.csv?by=feature").text)))
    assert {r["feature"] for r in rows} == {"acme/chatbot", "acme/search", "globex/chatbot"}


def test_ranges_up_to_48_hours_are_hourly(reader, traffic):
    body = reader.get("/reports/api/spend?range=48h&by=feature").json()
    assert body["filters"]["granularity"] == "hour"
    assert len(body["labels"]) == 48
    # search was 2 days ago; each team's chatbot is its own feature, never merged
    assert {s["name"] for s in body["series"]} == {"acme/chatbot", "globex/chatbot"}


def test_a_custom_range_and_the_feature_filter_apply(reader, traffic):
    day = (timezone.now() - dt.timedelta(days=2)).date().isoformat()
    body = reader.get(
        f"/reports/api/overview?range=custom&start={day}&end={day}&feature=search"
    ).json()
    assert body["labels"] == [f"{day} {h:02d}:00" for h in range(24)]  # one day: hourly
    assert (body["totals"]["requests"], body["totals"]["spend_usd"]) == (1, "0.2000000000")


def test_the_filters_are_kept_in_every_nav_link(reader, traffic):
    page = reader.get("/reports/cache/?team=acme&feature=chatbot&range=30d").content.decode()
    for path in ("/reports/", "/reports/spend/", "/reports/providers/", "/reports/models/"):
        assert f'href="{path}?range=30d&amp;team=acme&amp;feature=chatbot"' in page


def test_the_csv_is_the_table_behind_the_chart(reader, traffic):
    response = reader.get("/reports/spend.csv?by=team")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    today = timezone.now().date().isoformat()
    two_days_ago = (timezone.now() - dt.timedelta(days=2)).date().isoformat()
    assert rows == [
        ["bucket", "team", "requests", "input_tokens", "output_tokens", "cost_usd"],
        [two_days_ago, "acme", "1", "100", "50", "0.2000000000"],
        [today, "acme", "2", "200", "100", "0.6000000000"],
        [today, "globex", "1", "100", "50", "0.0000000000"],
    ]


def test_the_cache_api_gives_hit_rates_and_savings(reader, traffic):
    Baseline.objects.create(model=traffic["large"])
    body = reader.get("/reports/api/cache").json()
    assert (body["requests"], body["hits"], body["overall_hit_rate"]) == (4, 1, 0.25)
    assert body["total_saved_usd"] == "0.0025000000"  # the hit at the baseline's prices
    chat = next(f for f in body["features"] if f["feature"] == "acme/chatbot")
    assert (chat["requests"], chat["hits"]) == (2, 1)


def test_past_the_features_shown_the_cache_page_sums_the_others(reader, traffic, monkeypatch):
    from reports import health

    monkeypatch.setattr(health, "FEATURES_SHOWN", 1)
    body = reader.get("/reports/api/cache").json()
    rows = [(f["feature"], f["requests"], f["hits"], f["hit_rate"]) for f in body["features"]]
    assert rows == [("acme/chatbot", 2, 1, 0.5), ("2 other features", 2, 0, 0.0)]
    assert body["other_features"] == 2 and body["requests"] == 4
    assert body["features"][1]["series"][-1] == 0.0  # today: globex's error, no hit
    assert "<td>2 other features</td>" in reader.get("/reports/cache/").content.decode()


def test_the_providers_api_gives_rates_percentiles_and_circuit_openings(reader, traffic):
    body = reader.get("/reports/api/providers").json()
    rows = {r["model"]: r for r in body["table"]}
    assert rows["large"]["calls"] == 2
    assert (rows["large"]["error_rate"], rows["large"]["fallback_rate"]) == (0.5, 0.5)
    assert rows["small"]["calls"] == 1  # the cache hit never reached the provider
    assert 50 <= rows["small"]["p50_ms"] <= 100
    assert body["circuit_openings"] == {"sim": 1}
    assert body["circuit_events"][0]["reason"] == "consecutive_failures"
    assert body["openings_over_time"] == [{"provider": "sim", "counts": [0] * 6 + [1]}]


def test_the_model_mix_gives_shares_of_requests_and_spend(reader, traffic):
    body = reader.get("/reports/api/models").json()
    shares = {m["model"]: (m["request_share"], m["cost_share"]) for m in body["models"]}
    assert shares == {"small": (0.5, 0.75), "large": (0.5, 0.25)}


def test_an_unknown_api_page_is_404(reader):
    assert reader.get("/reports/api/nothing").status_code == 404


def test_the_endpoint_filter_splits_chat_from_embeddings(reader, world):
    now = timezone.now()
    write_ledger(
        [
            make_record(world["acme"], world["acme_chat"], created_at=now, cost_usd="0.5"),
            make_record(
                world["acme"],
                world["acme_search"],
                created_at=now,
                cost_usd="0.01",
                output_tokens=0,
                endpoint="embeddings",
            ),
        ]
    )
    for endpoint, spend in [("", "0.51"), ("embeddings", "0.01"), ("chat.completions", "0.5")]:
        body = reader.get(f"/reports/api/overview?endpoint={endpoint}").json()
        assert Decimal(body["totals"]["spend_usd"]) == Decimal(spend)
        assert body["filters"]["endpoint"] == endpoint
    page = reader.get("/reports/?endpoint=embeddings").content.decode()
    assert '<option value="embeddings" selected>' in page
    assert 'href="/reports/spend/?range=7d&amp;endpoint=embeddings"' in page
    bad = reader.get("/reports/api/overview?endpoint=nope")
    assert bad.status_code == 400
