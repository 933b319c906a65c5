"""Headless Chromium (Debian's package, driven by Playwright) signs in, opens every report
page, checks that each chart drew data and that the console stayed clean, and saves the
overview screenshot the README shows."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer

from gateway.models import LanguageModel, Team
from gateway.money import Prices, cost_of
from gateway.providers.base import Usage
from reports import rollups
from reports.backfill import backfill
from tests.factories import (
    make_budget,
)
from tests.reports.conftest import make_demo_config, make_record, write_ledger

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's picture is refreshed on purpose (UPDATE_SCREENSHOT=1), not by every test run.
SCREENSHOT = Path(settings.BASE_DIR) / (
    "docs/overview.png" if os.environ.get("UPDATE_SCREENSHOT") else "var/overview.png"
)
PAGES = [
    "/reports/",
    "/reports/spend/?by=model",
    "/reports/cache/",
    "/reports/providers/",
    "/reports/models/",
]

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed",
    ),
]

# Every chart exists, has at least one dataset with a non-zero point, and its canvas differs
# from a blank canvas of the same size.
CHARTS_DREW = """() => {
  const charts = window.reportCharts || [];
  if (!charts.length) return "no chart";
  for (const chart of charts) {
    const values = chart.data.datasets.flatMap(d => d.data).filter(v => v);
    if (!values.length) return "empty chart " + chart.canvas.id;
    const blank = document.createElement("canvas");
    blank.width = chart.canvas.width; blank.height = chart.canvas.height;
    if (chart.canvas.toDataURL() === blank.toDataURL()) return "blank canvas " + chart.canvas.id;
  }
  return "ok";
}"""


def demo_world() -> None:
    """A configuration like the demo's, 30 days of synthetic history and today's traffic."""
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


@pytest.fixture
def seeded(transactional_db, django_user_model) -> None:
    demo_world()
    django_user_model.objects.create_user("manager", password="pw-manager-123", is_staff=True)


@pytest.fixture
def live_server(_report_settings, seeded):
    """pytest-django's live server, started per test (not per session) and after conftest's
    settings overrides, so that its middleware sees them: outside the embedded mode the
    production https redirect would otherwise send Chromium to https://localhost."""
    server = LiveServer("localhost:0")
    yield server
    server.stop()


@pytest.fixture
def browser(seeded):
    # Playwright's sync API runs an event loop in this thread, where Django refuses ORM
    # calls: every record is created before it starts.
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_every_report_page_draws_its_charts_without_console_errors(live_server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(f"{live_server.url}/reports/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "manager")
    page.fill("#id_password", "pw-manager-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/reports/")
    # Django's own admin login page has no favicon link, so Chromium's /favicon.ico probe
    # 404s there; the report pages declare theirs. Judge the report pages only.
    problems.clear()

    for path in PAGES:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert page.evaluate(CHARTS_DREW) == "ok", path
        if path == "/reports/":
            assert page.locator(".bar .threshold.crossed").count() >= 2
            SCREENSHOT.parent.mkdir(exist_ok=True, parents=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []
    assert SCREENSHOT.stat().st_size > 10_000
