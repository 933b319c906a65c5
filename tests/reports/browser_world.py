"""`python -m tests.reports.browser_world`: the browser test's world, written in the site
server's own environment (its database, which may be a SQLite file only it can see): a
configuration like the demo's, 30 days of synthetic history, today's traffic crossing a budget's
alert thresholds, a circuit opening, a superuser `BROWSER_USER` who signs in through the
admin's login form, and a manager of the product team `BROWSER_MANAGER` (made by
`createmanager`) who signs in at /reports/login/; both with the password in
`BROWSER_PASSWORD`."""

from __future__ import annotations

import datetime as dt
import os

import django


def demo_world() -> None:
    from django.utils import timezone

    from gateway.models import LanguageModel, Team
    from gateway.money import Prices, cost_of
    from gateway.providers.base import Usage
    from reports import rollups
    from reports.backfill import backfill
    from tests.factories import make_budget
    from tests.reports.conftest import make_demo_config, make_record, write_ledger

    make_demo_config()
    product = Team.objects.get(name="product")
    gpt4o = LanguageModel.objects.get(name="gpt-4o")
    chatbot = product.features.get(name="chatbot")
    make_budget(product, chatbot, daily_limit_usd="0.5", alert_thresholds=[50, 80, 100], hard=False)
    backfill(days=30, per_day=300)
    now = timezone.now()
    cost = cost_of(Usage(4000, 2500), Prices(gpt4o.input_per_mtok, gpt4o.output_per_mtok)).usd
    write_ledger(
        [  # today: the chatbot crosses 50 % and 80 % of its daily budget
            make_record(
                product,
                chatbot,
                created_at=now - dt.timedelta(minutes=i),
                requested_model="auto",
                served_model="gpt-4o",
                provider="sim-openai",
                input_tokens=4000,
                output_tokens=2500,
                cost_usd=str(cost),
            )
            for i in range(12)
        ]
    )
    rollups.record_circuit_events(
        [{"provider": "sim-openai", "opened_at": now.isoformat(), "reason": "consecutive_failures"}]
    )
    outage_and_incidents(product, chatbot, now)


def outage_and_incidents(product, chatbot, now) -> None:
    """A 20-minute Anthropic outage three hours ago that gpt-4o rescued (the availability
    page), and the incidents the detector finds in it (the incidents page)."""
    from reports import incidents, rollups
    from tests.reports.conftest import make_record, write_ledger

    start = now - dt.timedelta(hours=3)
    rollups.record_circuit_events(
        [
            {"provider": "sim-anthropic", "opened_at": start.isoformat(), "reason": "x"},
            {
                "provider": "sim-anthropic",
                "opened_at": (start + dt.timedelta(minutes=20)).isoformat(),
                "kind": "closed",
            },
        ]
    )
    failed = {"model": "claude-sonnet-4", "provider": "sim-anthropic", "error": "provider error"}
    served = {"model": "gpt-4o", "provider": "sim-openai", "error": ""}
    write_ledger(
        [
            make_record(
                product,
                chatbot,
                created_at=start + dt.timedelta(minutes=i // 3, seconds=i),
                requested_model="claude-sonnet-4",
                served_model="gpt-4o",
                provider="sim-openai",
                attempts=2,
                attempt_log=[failed, served],
                cost_usd="0.004",
            )
            for i in range(40)
        ]
    )
    incidents.detect(now)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    demo_world()
    get_user_model().objects.create_superuser(
        os.environ["BROWSER_USER"], "browser@example.com", os.environ["BROWSER_PASSWORD"]
    )
    # The dashboards' reader: a manager of the product team, made as an operator would.
    os.environ["MANAGER_PASSWORD"] = os.environ["BROWSER_PASSWORD"]
    call_command("createmanager", os.environ["BROWSER_MANAGER"], "--teams", "product", "--noinput")


if __name__ == "__main__":
    main()
