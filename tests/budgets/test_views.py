"""GET /v1/budget: spent, reserved, limit, remaining and reset time per window."""

from __future__ import annotations

from decimal import Decimal

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from budgets.windows import current_windows
from gateway import budget_api
from gateway.money import usd_to_units
from tests.budgets import steps
from tests.budgets.conftest import arun, team_snap
from tests.factories import make_budget, make_feature, make_key, make_team

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team():
    team = make_team(timezone="Europe/Paris")
    chat, search = make_feature(team, "chat"), make_feature(team, "search")
    make_budget(team, daily_limit_usd="2", monthly_limit_usd="40")
    make_budget(team, chat, daily_limit_usd="1", hard=False, alert_thresholds=[80])
    make_budget(team, search, monthly_limit_usd="3", alert_thresholds=[])
    return team


def _get(client, secret):
    return client.get("/v1/budget", headers={"Authorization": f"Bearer {secret}"})


def test_it_shows_spent_reserved_limit_remaining_and_reset_per_window(client, team):
    chat = team.features.get(name="chat")
    _, secret = make_key(team, chat)
    snap = team_snap(team.id)
    chat_budgets = snap.budgets_for(snap.features["chat"])
    arun(steps.record_spend, team=snap, budgets=chat_budgets, units=usd_to_units(Decimal("0.25")))
    arun(
        steps.reserve,
        team=snap,
        budgets=chat_budgets,
        request_id="in-flight",
        units=usd_to_units(Decimal("0.5")),
    )

    response = _get(client, secret)

    assert response.status_code == 200
    body = response.json()
    assert (body["object"], body["team"], body["feature"]) == ("budget_status", "acme", "chat")
    assert [(b["scope"], b["feature"], b["hard"]) for b in body["budgets"]] == [
        ("team", None, True),
        ("feature", "chat", False),
    ]
    assert {b["reservation"] for b in body["budgets"]} == {"cap"}  # the default mode
    daily, monthly = current_windows("Europe/Paris")
    assert body["budgets"][0]["windows"] == [
        {
            "window": "daily",
            "window_key": daily.key,
            "spent_usd": "0.25",
            "reserved_usd": "0.5",
            "limit_usd": "2",
            "remaining_usd": "1.25",
            "resets_at": daily.end.isoformat(),
        },
        {
            "window": "monthly",
            "window_key": monthly.key,
            "spent_usd": "0.25",
            "reserved_usd": "0.5",
            "limit_usd": "40",
            "remaining_usd": "39.25",
            "resets_at": monthly.end.isoformat(),
        },
    ]
    assert body["budgets"][1]["alert_thresholds"] == [80]
    assert body["budgets"][1]["windows"][1]["limit_usd"] is None
    assert body["budgets"][1]["windows"][1]["remaining_usd"] is None


def test_a_key_without_a_feature_sees_every_budget_of_its_team(client, team):
    _, secret = make_key(team)
    body = _get(client, secret).json()
    assert [b["feature"] for b in body["budgets"]] == [None, "chat", "search"]
    assert body["budgets"][2]["windows"][1]["remaining_usd"] == "3"


def test_it_answers_401_in_the_openai_envelope_without_a_key(client, team):
    response = client.get("/v1/budget")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_it_answers_405_to_a_post(client, team):
    _, secret = make_key(team)
    response = client.post("/v1/budget", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_it_answers_503_when_redis_is_unreachable(client, team, monkeypatch):
    _, secret = make_key(team)
    monkeypatch.setattr(
        budget_api, "aredis", lambda: Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    )
    response = _get(client, secret)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
