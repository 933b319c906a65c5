"""`demotraffic` sends its requests through the gateway's HTTP API (in process) and leaves
full dashboards: ledger rows for the eight features, cache hits, fallbacks during the
provider outage, rollups equal to the ledger, and synthetic history when asked."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db.models import Sum

from gateway.models import ApiKey, Provider, UsageRecord
from reports.backfill import SYNTHETIC_PREFIX
from reports.models import DailyRollup, HourlyRollup
from tests.reports.conftest import DEMO_FEATURES, make_demo_config

pytestmark = pytest.mark.django_db(transaction=True)


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
