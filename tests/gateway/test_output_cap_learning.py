"""The learned output cap (gateway/outputcaps.py, the learn-output-caps beat task), where an
operator sees and overrides it (the admin, the YAML file), and where a person sees what
requests in flight hold (the budget admin, the reports overview)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from budgets.keys import budget_keys
from budgets.models import Budget
from budgets.windows import current_windows
from gateway import tasks
from gateway.configfile import ConfigFileError, export_config, import_config
from gateway.models import Feature, UsageRecord
from gateway.money import usd_to_units
from tests.budgets import steps
from tests.budgets.conftest import arun, team_snap
from tests.factories import make_budget, make_feature, make_model, make_provider, make_team

pytestmark = pytest.mark.django_db


@pytest.fixture
def feature():
    make_model("big", make_provider("sim"), max_output_tokens=16384)
    return make_feature(make_team("acme"), "chatbot")


_batches = itertools.count()


def answers(feature: Feature, outputs: list[int], *, days_ago: float = 1, **kw) -> None:
    at = timezone.now() - dt.timedelta(days=days_ago)
    batch = next(_batches)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"r-{batch}-{i}",
            created_at=at,
            team=feature.team,
            feature=feature,
            output_tokens=n,
            **kw,
        )
        for i, n in enumerate(outputs)
    )


def learned(feature: Feature) -> int | None:
    tasks.learn_output_caps()
    feature.refresh_from_db()
    return feature.learned_output_cap


def test_the_999th_percentile_of_a_weeks_answers_is_learned(feature):
    # 2,000 answers of 1..2,000 tokens: the 99.9th percentile is the third largest (2 above).
    answers(feature, list(range(1, 2001)))
    assert learned(feature) == 1998
    assert feature.learned_output_cap_at is not None


def test_old_answers_failures_and_cache_hits_do_not_count(feature):
    answers(feature, [1500] * 200)
    answers(feature, [9000] * 200, days_ago=8)  # outside the 7-day window
    answers(feature, [9000] * 200, status="error")
    answers(feature, [9000] * 200, cache="hit")
    assert learned(feature) == 1500


def test_floor_ceiling_and_too_few_answers(feature):
    answers(feature, [10] * 99)
    assert learned(feature) is None  # under OUTPUT_CAP_MIN_SAMPLES: the default applies
    answers(feature, [10], days_ago=2)
    assert learned(feature) == settings.GATEWAY["OUTPUT_CAP_FLOOR"]
    answers(feature, [50_000] * 100, days_ago=3)
    assert learned(feature) == 16384  # never above the largest max output of the models


def test_a_cap_that_answers_keep_reaching_doubles(feature):
    """Capped answers cannot show how long they would have been: when more than 0.1 % end
    at their cap, the cap doubles rather than learning its own value back."""
    answers(feature, [800] * 990)
    answers(feature, [2048] * 10, days_ago=2, output_cap=2048)
    assert learned(feature) == 4096
    UsageRecord.objects.filter(output_cap=2048).update(output_tokens=1900)
    assert learned(feature) == 1900


def test_beat_runs_it_hourly_with_an_expiry():
    entry = settings.CELERY_BEAT_SCHEDULE["learn-output-caps"]
    assert entry["task"] == "gateway.tasks.learn_output_caps"
    assert 0 < entry["options"]["expires"] < entry["schedule"]


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create(username="admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_the_admin_shows_the_learned_and_the_effective_cap_and_takes_an_override(
    admin_client, feature
):
    Feature.objects.filter(pk=feature.pk).update(learned_output_cap=3000)
    page = admin_client.get(f"/admin/gateway/feature/{feature.pk}/change/").content.decode()
    assert "3000" in page and "3000 tokens (learned" in page
    listing = admin_client.get("/admin/gateway/feature/").content.decode()
    assert "3000 tokens (learned" in listing
    response = admin_client.post(
        f"/admin/gateway/feature/{feature.pk}/change/",
        {"team": feature.team_id, "name": "chatbot", "default_cache_ttl": 3600, "output_cap": 700},
    )
    assert response.status_code == 302
    feature.refresh_from_db()
    assert (feature.output_cap, feature.learned_output_cap) == (700, 3000)
    page = admin_client.get(f"/admin/gateway/feature/{feature.pk}/change/").content.decode()
    assert "700 tokens (set here" in page
    assert admin_client.get("/admin/gateway/feature/add/").status_code == 200
    key_form = admin_client.get("/admin/gateway/apikey/add/").content.decode()
    assert 'name="output_cap"' in key_form


def test_the_yaml_file_round_trips_the_cap_and_the_reservation_mode():
    data = {
        "teams": [
            {
                "name": "acme",
                "features": [{"name": "chatbot", "output_cap": 900}, "search"],
                "budgets": [
                    {"daily_usd": "2", "reservation": "strict"},
                    {"feature": "search", "daily_usd": "1"},
                ],
            }
        ]
    }
    import_config(data)
    assert Feature.objects.get(name="chatbot").output_cap == 900
    assert Feature.objects.get(name="search").output_cap is None
    assert [b.reservation for b in Budget.objects.order_by("id")] == ["strict", "cap"]
    exported = export_config()["teams"][0]
    assert exported["features"] == [{"name": "chatbot", "output_cap": 900}, "search"]
    assert exported["budgets"][0]["reservation"] == "strict"
    assert "reservation" not in exported["budgets"][1]  # the default is left out
    assert import_config({"teams": [exported]}).counts["budgets"]["unchanged"] == 2


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"features": [{"name": "f", "output_cap": 0}]}, "output_cap"),
        ({"features": [{"name": "f", "output_cap": "lots"}]}, "output_cap"),
        ({"budgets": [{"daily_usd": "1", "reservation": "loose"}]}, "reservation"),
    ],
)
def test_the_yaml_file_refuses_a_bad_cap_or_mode(entry, message):
    with pytest.raises(ConfigFileError, match=message):
        import_config({"teams": [{"name": "acme", **entry}]})


def test_what_requests_in_flight_hold_is_shown_beside_spend(client, django_user_model):
    team = make_team("acme")
    budget = make_budget(team, daily_limit_usd="2", alert_thresholds=[])
    arun(
        steps.reserve,
        team=team_snap(team.id),
        budgets=list(team_snap(team.id).budgets),
        request_id="r1",
        units=usd_to_units(Decimal("0.25")),
    )
    user = django_user_model.objects.create(username="admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    listing = client.get("/admin/budgets/budget/").content.decode()
    assert "$0 + $0.25 reserved" in listing
    overview = client.get("/reports/api/overview").json()["budgets"][0]
    assert Decimal(overview["daily"]["reserved_usd"]) == Decimal("0.25")
    assert "+ $0.25 reserved" in client.get("/reports/").content.decode()
    daily, _ = current_windows("UTC")
    assert budget_keys(budget.team_id, budget.pk, daily.key).reserved  # the counter the pages read
