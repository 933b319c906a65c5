"""The admin: live spend beside each budget's limits, and read-only alert records."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from budgets import admin as budgets_admin
from budgets.keys import budget_keys
from budgets.models import BudgetAlert
from budgets.windows import current_windows
from gateway import runtime
from gateway.money import usd_to_units
from tests.factories import make_budget, make_team

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    # force_login skips password hashing, which is most of admin_client's set-up time.
    user = django_user_model.objects.create(username="admin", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_the_budget_list_shows_live_spend_beside_each_limit(admin_client, redis_sync):
    budget = make_budget(make_team(), daily_limit_usd="2", monthly_limit_usd="40")
    daily, monthly = current_windows("UTC")
    redis_sync.set(
        budget_keys(budget.team_id, budget.id, daily.key).spent, usd_to_units(Decimal("1.5"))
    )
    redis_sync.set(
        budget_keys(budget.team_id, budget.id, monthly.key).spent, usd_to_units(Decimal("12.25"))
    )

    response = admin_client.get("/admin/budgets/budget/")

    assert response.status_code == 200
    html = response.content.decode()
    for cell in ("$1.5", "$2", "$12.25", "$40"):
        assert f'">{cell}</td>' in html


def test_the_budget_list_still_renders_when_redis_is_down(admin_client, monkeypatch):
    make_budget(make_team(), daily_limit_usd="2")
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(runtime, "sync_redis", lambda: down)

    response = admin_client.get("/admin/budgets/budget/")

    assert response.status_code == 200
    assert response.content.decode().count(budgets_admin.UNAVAILABLE) == 2


def test_budget_alerts_are_read_only(admin_client):
    budget = make_budget(make_team(), daily_limit_usd="2")
    alert = BudgetAlert.objects.create(
        budget=budget,
        window="daily",
        window_key="2026-11-27",
        threshold=80,
        spend_usd=Decimal("1.6"),
        limit_usd=Decimal("2"),
        channel="email",
        status="failed",
        error="SMTPServerDisconnected",
    )
    assert admin_client.get("/admin/budgets/budgetalert/").status_code == 200
    assert admin_client.get("/admin/budgets/budgetalert/add/").status_code == 403
    page = admin_client.get(f"/admin/budgets/budgetalert/{alert.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
