"""Repricing arithmetic: exact Decimal, prices that change between requests, a baseline that
changes, and the price history a model's prices keep."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway.models import Baseline, ModelPrice
from gateway.pricehistory import EARLIEST, PriceHistory
from reports.models import DailyRollup, HourlyRollup
from reports.savings import total_savings
from tests.reports.conftest import make_record, write_ledger

pytestmark = pytest.mark.django_db


def savings():
    return total_savings(DailyRollup.objects.all()).as_dict()


def test_a_models_first_price_is_valid_since_ever_and_a_change_appends_a_dated_row(world):
    large = world["large"]
    assert list(large.price_history.values_list("valid_from", "input_per_mtok")) == [
        (EARLIEST, Decimal("10"))
    ]
    large.input_per_mtok = Decimal("12.5")
    large.save()
    large.save()  # unchanged: no new row
    today = timezone.now().astimezone(dt.UTC).date()
    rows = list(large.price_history.order_by("valid_from").values_list("valid_from", flat=True))
    assert rows == [EARLIEST, today]
    book = PriceHistory.load()
    assert book.prices("large", today).input == Decimal("12.5")
    assert book.prices("large", today - dt.timedelta(days=1)).input == Decimal("10")


def test_savings_are_exact_decimals_at_the_baselines_price(world):
    Baseline.objects.create(model=world["large"])
    write_ledger(
        [
            # small: 1234 × $1 + 567 × $2 per Mtok = $0.002368
            make_record(world["acme"], input_tokens=1234, output_tokens=567, cost_usd="0.002368"),
            make_record(world["acme"], input_tokens=3, output_tokens=1, cache="hit"),
        ]
    )
    s = savings()
    # large: 1234 × $10 + 567 × $30 = $0.02935; the hit: 3 × $10 + 1 × $30 = $0.00006
    assert s["routing_usd"] == Decimal("0.02935") - Decimal("0.002368")
    assert s["cache_usd"] == Decimal("0.00006")
    assert s["total_usd"] == s["routing_usd"] + s["cache_usd"]
    assert s["baseline_usd"] == Decimal("0.02941")
    assert s["percent"] == Decimal("91.9")


def test_each_request_is_repriced_at_the_price_of_its_own_day(world):
    Baseline.objects.create(model=world["large"])
    now = timezone.now()
    changed_on = (now - dt.timedelta(days=2)).astimezone(dt.UTC).date()
    ModelPrice.objects.create(
        model=world["large"], valid_from=changed_on, input_per_mtok=20, output_per_mtok=60
    )
    write_ledger(
        [
            make_record(
                world["acme"],
                created_at=now - dt.timedelta(days=4),
                input_tokens=1000,
                output_tokens=0,
            ),
            make_record(world["acme"], created_at=now, input_tokens=1000, output_tokens=0),
        ]
    )
    # $10 per Mtok before the change, $20 from its day on: $0.01 + $0.02.
    assert savings()["baseline_usd"] == Decimal("0.03")


def test_changing_the_baseline_reprices_the_past(world):
    baseline = Baseline.objects.create(model=world["large"])
    write_ledger(
        [make_record(world["acme"], input_tokens=1000, output_tokens=1000, cost_usd="0.003")]
    )
    assert savings()["total_usd"] == Decimal("0.04") - Decimal("0.003")
    baseline.model = world["small"]
    baseline.save()
    assert savings()["total_usd"] == Decimal("0")


def test_a_baseline_with_a_cache_prices_hits_at_nothing(world):
    Baseline.objects.create(model=world["large"], cache=True)
    write_ledger([make_record(world["acme"], cache="hit", input_tokens=1000, output_tokens=0)])
    assert savings()["cache_usd"] == Decimal("0")


def test_without_a_baseline_no_saving_is_claimed(world):
    write_ledger([make_record(world["acme"], input_tokens=1000, cost_usd="0.001")])
    s = savings()
    assert (s["complete"], s["total_usd"], s["spend_usd"]) == (False, Decimal(0), Decimal("0.001"))


def test_a_team_baseline_applies_to_that_team_only(world):
    Baseline.objects.create(model=world["large"])
    Baseline.objects.create(team=world["acme"], model=world["small"])
    write_ledger(
        [
            make_record(world["acme"], input_tokens=1000, output_tokens=0, cost_usd="0.001"),
            make_record(world["globex"], input_tokens=1000, output_tokens=0, cost_usd="0.001"),
        ]
    )
    assert savings()["baseline_usd"] == Decimal("0.001") + Decimal("0.01")


def test_rebuildrollups_restores_the_token_counts_of_rollups_written_before_the_upgrade(world):
    Baseline.objects.create(model=world["large"])
    write_ledger([make_record(world["acme"], input_tokens=1000, output_tokens=0, cost_usd="0.001")])
    before = savings()
    for model in (HourlyRollup, DailyRollup):  # rollups as reports 0005 left them
        model.objects.update(billed_input_tokens=0)
    assert savings()["baseline_usd"] == 0
    out = io.StringIO()
    call_command("rebuildrollups", "--since", "2d", stdout=out)
    assert "hourly rollups repaired" in out.getvalue()
    assert savings() == before
