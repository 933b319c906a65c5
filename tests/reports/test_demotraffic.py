"""`demotraffic` sends its requests through the gateway's HTTP API (in process) and leaves
full dashboards: ledger rows for the eight features, cache hits, fallbacks during the
provider outage, rollups equal to the ledger, and synthetic history when asked."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum

from budgets.models import BudgetAlert
from gateway.models import ApiKey, Provider, UsageRecord
from reports import demo as demo_traffic
from reports.backfill import SYNTHETIC_PREFIX
from reports.models import DailyRollup, HourlyRollup
from tests.reports.conftest import DEMO_FEATURES, make_demo_config

pytestmark = pytest.mark.django_db(transaction=True)
DEMO_YAML = Path(settings.BASE_DIR) / "gateway" / "defaults" / "demo.yaml"


@pytest.fixture
def demo(transactional_db):
    make_demo_config()


def test_it_sends_the_traffic_through_the_gateway_and_rolls_it_up(demo, capsys):
    call_command("demotraffic", requests=120)

    real = UsageRecord.objects.exclude(request_id__startswith=SYNTHETIC_PREFIX)
    assert real.count() == 120
    assert set(real.values_list("feature__name", flat=True)) == set(DEMO_FEATURES)
    assert real.filter(cache=UsageRecord.Cache.HIT).exists()
    assert real.filter(attempts__gt=1, provider="sim-anthropic").exists()  # the outage
    assert HourlyRollup.objects.aggregate(n=Sum("requests"))["n"] == 120
    assert DailyRollup.objects.aggregate(n=Sum("requests"))["n"] == 120
    assert "Sent 120 requests" in capsys.readouterr().out


def test_it_restores_the_provider_and_revokes_its_temporary_keys(demo):
    Provider.objects.filter(name="sim-openai").update(
        options={"latency_ms": 0, "failure_rate": 0.0}
    )

    call_command("demotraffic", requests=20)

    assert Provider.objects.get(name="sim-openai").options == {"latency_ms": 0, "failure_rate": 0.0}
    temporary = ApiKey.objects.filter(name="demotraffic")
    assert temporary.count() == 2  # one per team with features
    assert not temporary.filter(revoked_at__isnull=True).exists()


def test_backfill_days_writes_marked_synthetic_history(demo):
    call_command("demotraffic", requests=10, backfill_days=3)

    synthetic = UsageRecord.objects.filter(request_id__startswith=SYNTHETIC_PREFIX)
    assert synthetic.count() > 100
    assert HourlyRollup.objects.aggregate(n=Sum("requests"))["n"] == UsageRecord.objects.count()


def test_the_demos_runaway_loop_is_stopped_by_its_hard_budget_and_alerts(transactional_db, capsys):
    """The demo's own configuration (gateway/defaults/demo.yaml), as `make run` imports it:
    its research-agent loop fills the refused-requests and budget-alert screens."""
    call_command("importconfig", str(DEMO_YAML), stdout=io.StringIO())

    call_command("demotraffic", requests=40)

    loop = UsageRecord.objects.filter(feature__name=demo_traffic.RUNAWAY_FEATURE)
    served = loop.filter(status=UsageRecord.Status.OK)
    refused = loop.filter(http_status=429, error_type="budget_exceeded")
    assert served.count() >= 10 and refused.count() >= 10
    assert served.count() + refused.count() == demo_traffic.RUNAWAY_STEPS
    assert served.aggregate(s=Sum("cost_usd"))["s"] <= Decimal("0.04")  # never overspent
    alerts = BudgetAlert.objects.filter(budget__feature__name=demo_traffic.RUNAWAY_FEATURE)
    # 50 % and 80 % as spend crosses them; then the first refusal that the rest of the limit
    # cannot cover sends "budget exhausted" once, on the 100 % claim (budgets/exhaustion.py).
    assert sorted(alerts.values_list("threshold", flat=True)) == [50, 80, 100]
    assert set(alerts.values_list("status", flat=True)) == {BudgetAlert.Status.SENT}
    assert HourlyRollup.objects.aggregate(n=Sum("refused"))["n"] == refused.count()
    out = capsys.readouterr().out
    assert f"Runaway research-agent loop: {served.count()} served, {refused.count()} refused" in out
    assert "reached 80 % of its daily limit" in out
    assert "Budget exhausted" in out
