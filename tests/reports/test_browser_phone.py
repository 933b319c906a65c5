"""The admin's key page and the dashboards in headless Chromium, at 1280 px and at a phone's
390 px (issue 21): a superuser signs in through the admin's login form, creates a key (the
feature list follows the team, the secret comes with a Copy button and a curl line), revokes
it from its own page through the confirmation; at 390 px every dashboard's navigation wraps
(no link clipped) and no page scrolls sideways. Screenshots in var/screenshots/phone/debug-N/
(DEBUG=1 as `make run`, DEBUG=0 as production after `collectstatic`)."""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path

import pytest

from tests.reports.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGES,
    SCREENSHOTS,
    screenshot,
    watch,
)

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser, pytest.mark.slow]
USER = "browser-admin"

# Whether the page is wider than the window, and any nav link outside it or hidden.
FITS = """() => {
  const width = window.innerWidth;
  const doc = document.documentElement.scrollWidth;
  if (doc > width) return "the page is " + doc + " px wide in a " + width + " px window";
  for (const a of document.querySelectorAll(".nav a")) {
    const box = a.getBoundingClientRect();
    const name = a.textContent.trim();
    if (box.width === 0 || box.left < 0 || box.right > width) return "nav link clipped: " + name;
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    if (!a.contains(hit)) return "nav link hidden: " + name;
  }
  return "ok";
}"""


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.mark.parametrize("debug", [True, False], ids=["debug-1", "debug-0"])
def test_key_page_and_dashboards_at_1280_and_390_px(site, browser, debug):
    password = secrets.token_urlsafe(16)
    server = site(
        debug=debug,
        seed="tests.reports.browser_world",
        BROWSER_USER=USER,
        BROWSER_MANAGER="browser-manager",
        BROWSER_PASSWORD=password,
    )
    folder = SCREENSHOTS / "phone" / f"debug-{int(debug)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    watch(page, problems)

    page.goto(f"{server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", USER)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")

    # Creating a key: choose a team, and the feature list offers only that team's features.
    page.goto(f"{server.url}/admin/gateway/apikey/add/")
    page.select_option("#id_team", label="product")
    offered = page.locator("#id_feature option:not([hidden])").all_inner_texts()
    assert offered[0].startswith("---") and len(offered) > 1
    assert all(name.startswith("product/") for name in offered[1:]), offered
    page.select_option("#id_feature", label=offered[1])
    page.fill("#id_name", "browser key")
    page.click("[name=_save]")
    page.wait_for_selector("#api-key-secret")
    secret = page.input_value("#api-key-secret")
    assert secret.startswith("gw-")
    assert page.locator("button[data-copy=api-key-secret]").is_visible()
    assert "/v1/chat/completions" in page.input_value("#api-curl")
    screenshot(page, folder, "key-created-1280")

    # Revoking it from its own page: a button, then a confirmation.
    page.goto(f"{server.url}/admin/gateway/apikey/")
    page.get_by_role("link", name=secret[:10] + "…").click()
    page.wait_for_url("**/change/")
    screenshot(page, folder, "key-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, folder, "key-390")
    page.get_by_role("link", name="Revoke this key…").click()
    page.wait_for_url("**/revoke/")
    screenshot(page, folder, "key-revoke-390")
    page.get_by_role("button", name="Yes, revoke this key").click()
    page.wait_for_url("**/change/")
    assert "Revoked 1 key(s)" in page.locator(".messagelist .success").inner_text()
    assert page.locator("text=was revoked on").count() == 1

    # The ledger list fits 1280 px: outcome and reason are on screen, nothing scrolls sideways.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.url}/admin/gateway/usagerecord/")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    shown = page.locator("#changelist .results").bounding_box()
    for column in ("created_at", "outcome", "reason"):  # the rest scroll inside the table
        box = page.locator(f"th.column-{column}").bounding_box()
        assert box and box["x"] + box["width"] <= shown["x"] + shown["width"] + 1, column
    screenshot(page, folder, "usage-records-1280")
    page.set_viewport_size({"width": 390, "height": 844})

    # The dashboards at a phone's width, the monthly report and what-if among them.
    for name, path in {
        **PAGES,
        "reports-monthly": "/reports/monthly/",
        "reports-whatif": "/reports/whatif/",
    }.items():
        assert page.goto(f"{server.url}{path}").status == 200, path
        assert page.evaluate(FITS) == "ok", path
        screenshot(page, folder, f"{name}-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.url}/reports/")
    assert page.evaluate(FITS) == "ok"

    # Availability and incidents, at both widths: the outage, its rescues and its cost.
    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        assert page.goto(f"{server.url}/reports/availability/").status == 200
        assert page.evaluate(FITS) == "ok", f"availability at {width} px"
        outage = page.locator("#outages table tbody tr").first.inner_text()
        assert "sim-anthropic" in outage and "20" in outage and "40" in outage, outage
        screenshot(page, folder, f"reports-availability-{width}")
        assert page.goto(f"{server.url}/reports/incidents/").status == 200
        assert page.evaluate(FITS) == "ok", f"incidents at {width} px"
        assert "provider outage: sim-anthropic" in page.locator("#incidents-table").inner_text()
        screenshot(page, folder, f"reports-incidents-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The charts: donuts name each slice with its share, count axes have whole ticks, the
    # latency line has no 0 for an unanswered bucket, and an empty chart says why.
    page.goto(f"{server.url}/reports/models/")
    legend = page.evaluate(
        "() => Chart.getChart('chart-mix-requests').legend.legendItems.map(i => i.text)"
    )
    assert legend and all(re.search(r" \(\d+\.\d %\)$", t) for t in legend), legend
    assert "," in page.locator("table tbody td.num").nth(8).inner_text()  # 1,234 tokens
    page.goto(f"{server.url}/reports/providers/")
    ticks = page.evaluate("() => Chart.getChart('chart-circuit').scales.y.ticks.map(t => t.value)")
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    p95 = page.evaluate("() => Chart.getChart('chart-latency').data.datasets.flatMap(d => d.data)")
    assert 0 not in p95
    screenshot(page, folder, "reports-providers-1280")
    page.goto(f"{server.url}/reports/providers/?range=custom&start=2001-01-01&end=2001-01-02")
    assert page.locator("canvas").count() == 0
    said = page.locator(".chart-empty").all_inner_texts()
    assert said == [
        "No answered request in this range, so no latency.",
        "No request to a provider in this range.",
    ]
    screenshot(page, folder, "reports-providers-empty")
    assert problems == []
    assert "Traceback" not in server.output()
