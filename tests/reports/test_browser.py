"""Headless Chromium (Debian's package, driven by Playwright) against the server the README
runs: uvicorn as a subprocess with several workers, DEBUG=1 as `make run` and DEBUG=0 as
production after `collectstatic` (tests/site_server.py), not Django's test server, which
serves static files by itself. A superuser signs in through the admin's login form; the admin
is styled and its scripts run. A manager signs in through the dashboards' own form at
/reports/login/; every report page draws its charts and offers only the manager's team; no
request fails and the console stays clean. A screenshot of each page is kept in
var/screenshots/ (gitignored)."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
from pathlib import Path

import pytest
from django.conf import settings

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
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
# The README's picture is refreshed on purpose (UPDATE_SCREENSHOT=1), not by every test run.
README_PICTURE = Path(settings.BASE_DIR) / "docs" / "overview.png"
PAGES = {
    "reports-overview": "/reports/",
    "reports-spend": "/reports/spend/?by=model",
    "reports-cache": "/reports/cache/",
    "reports-providers": "/reports/providers/",
    "reports-models": "/reports/models/",
}
USER = "browser-admin"
MANAGER = "browser-manager"

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

# Every chart on the page is a Chart.js instance (so Chart.js and charts.js loaded and ran),
# every canvas has one, each has a non-zero data point, and its canvas has painted pixels.
CHARTS_DREW = """() => {
  if (typeof Chart === "undefined") return "Chart.js did not load";
  const charts = Object.values(Chart.instances);
  if (!charts.length) return "no chart";
  const canvases = document.querySelectorAll("canvas").length;
  if (charts.length !== canvases) return charts.length + " charts for " + canvases + " canvases";
  for (const chart of charts) {
    const c = chart.canvas;
    if (!chart.data.datasets.flatMap(d => d.data).some(v => v)) return "empty chart " + c.id;
    const pixels = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
    if (painted < 0.01 * c.width * c.height) return "blank canvas " + c.id;
  }
  return "ok";
}"""

# The admin's base.css was fetched and applies: its rules are readable and its look shows
# (no body margin, a coloured header bar; unstyled, the body has 8px and the header none).
ADMIN_STYLED = """() => {
  const base = /\\/static\\/admin\\/css\\/base\\./;
  const sheet = [...document.styleSheets].find(s => base.test(s.href));
  if (!sheet) return "no link to admin/css/base.css";
  let rules = 0;
  try { rules = sheet.cssRules.length; } catch (e) {}  // a failed load is not readable
  if (!rules) return "admin/css/base.css did not load: " + sheet.href;
  if (getComputedStyle(document.body).marginTop !== "0px") return "body has its default margin";
  const header = document.getElementById("header");
  if (!header) return "no #header";
  const bg = getComputedStyle(header).backgroundColor;
  if (bg === "rgba(0, 0, 0, 0)" || bg === "transparent") return "#header has no background";
  return "ok";
}"""


# The dashboards' stylesheet was fetched and applies (the dark top bar).
REPORTS_STYLED = """() => {
  const css = /\\/static\\/reports\\/reports\\./;
  const sheet = [...document.styleSheets].find(s => css.test(s.href));
  if (!sheet) return "no link to reports/reports.css";
  let rules = 0;
  try { rules = sheet.cssRules.length; } catch (e) {}
  if (!rules) return "reports/reports.css did not load: " + sheet.href;
  const bar = document.querySelector(".topbar");
  if (!bar || getComputedStyle(bar).display !== "flex") return "the top bar is not styled";
  return "ok";
}"""


@pytest.fixture
def browser():
    # Playwright's sync API runs an event loop in this thread while it is open, where Django
    # refuses ORM calls: the world is written by the server's environment beforehand.
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def watch(page, problems: list[str]):
    """Collect the page's console errors, script errors and failed responses in `problems`."""
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
    return page


def screenshot(page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


@pytest.mark.parametrize("debug", [True, False], ids=["debug-1", "debug-0"])
def test_served_admin_is_styled_and_every_report_page_draws_its_charts(site, browser, debug):
    password = secrets.token_urlsafe(16)
    server = site(
        debug=debug,
        seed="tests.reports.browser_world",
        BROWSER_USER=USER,
        BROWSER_MANAGER=MANAGER,
        BROWSER_PASSWORD=password,
    )
    folder = SCREENSHOTS / f"debug-{int(debug)}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    watch(page, problems)

    # The real login form, with its CSRF cookie; DEBUG=0's cookies are Secure ones.
    page.goto(f"{server.url}/admin/")
    assert "/admin/login/" in page.url
    assert page.evaluate(ADMIN_STYLED) == "ok"
    screenshot(page, folder, "admin-login")
    page.fill("#id_username", USER)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    assert page.evaluate(ADMIN_STYLED) == "ok"
    screenshot(page, folder, "admin-index")

    # The team form: the inline's template row ("add another feature") is hidden by the
    # admin's CSS, and its script put the "Add another" link in its place.
    page.goto(f"{server.url}/admin/gateway/team/")
    page.get_by_role("link", name="product", exact=True).click()
    page.wait_for_url("**/change/")
    assert page.evaluate(ADMIN_STYLED) == "ok"
    template_row = page.locator("tr.empty-form")
    assert template_row.count() == 1
    assert template_row.is_hidden()
    assert page.locator("tr.add-row a").is_visible()
    screenshot(page, folder, "admin-team")

    # The dashboards' reader: a manager, in a browser of their own, through the managers'
    # sign-in form (CSRF cookie and token included), sent there by the dashboards.
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch(page, problems)
    page.goto(f"{server.url}/reports/")
    assert "/reports/login/?next=/reports/" in page.url
    assert page.evaluate(REPORTS_STYLED) == "ok"
    screenshot(page, folder, "reports-login")
    page.fill("#id_username", MANAGER)
    page.fill("#id_password", password)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"{server.url}/reports/")
    assert MANAGER in page.locator(".topbar .user").inner_text()

    for name, path in PAGES.items():
        response = page.goto(f"{server.url}{path}")
        assert response.status == 200, path
        assert page.evaluate(CHARTS_DREW) == "ok", path
        teams = page.locator("select[name=team] option").evaluate_all("os => os.map(o => o.value)")
        assert teams == ["", "product"], path  # "All teams" and the manager's one team
        if name == "reports-overview":
            assert page.locator(".bar .threshold.crossed").count() >= 2
        shot = screenshot(page, folder, name)
        if name == "reports-overview" and debug and os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, README_PICTURE)
    # The monthly report: a page of tables, no chart; printed, it drops the navigation and
    # the filters and fits its figures on one sheet.
    month = f"{dt.datetime.now(dt.UTC):%Y-%m}"  # the server's clock (moved, in shifted runs)
    response = page.goto(f"{server.url}/reports/monthly/?month={month}")
    assert response.status == 200
    assert page.evaluate(REPORTS_STYLED) == "ok"
    teams = page.locator("select[name=team] option").evaluate_all("os => os.map(o => o.value)")
    assert teams == ["", "product"]
    assert page.locator("#monthly-headline").inner_text().startswith(f"{month} so far")
    assert "product/chatbot" in page.locator("#monthly-features").inner_text()
    screenshot(page, folder, "reports-monthly")
    page.emulate_media(media="print")
    assert page.locator(".topbar").is_hidden() and page.locator("#monthly-form").is_hidden()
    screenshot(page, folder, "reports-monthly-print")
    pdf = page.pdf(format="A4", print_background=True)
    (folder / "reports-monthly.pdf").write_bytes(pdf)
    sheets = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert sheets == 1, f"a team's monthly report prints on one A4 sheet, not {sheets}"
    csv_answer = page.request.get(f"{server.url}/reports/monthly.csv?month={month}")
    assert csv_answer.status == 200 and csv_answer.text().startswith("month,team,feature,")
    page.emulate_media(media="screen")

    # What-if: the form starts from the admin's routes; the manager moves every route to one
    # model and replays (a real POST, CSRF token and cookie included).
    assert page.goto(f"{server.url}/reports/whatif/").status == 200
    candidate = page.locator("#candidate").input_value()
    assert "routes:" in candidate and "name: cheap-for-low-priority" in candidate
    page.fill("#candidate", "routes:\n  - {name: all-mini, chain: [gpt-4o-mini]}\n")
    page.click("#whatif-form [type=submit]")
    page.wait_for_selector("#whatif-total")
    shares = page.locator("#whatif-models tbody").inner_text()
    assert "gpt-4o-mini" in shares and "gpt-4o\t" not in shares
    assert page.locator("#whatif-rows tbody tr").count() >= 1
    screenshot(page, folder, "reports-whatif")

    assert problems == []
    assert "Traceback" not in server.output()


def test_name_filters_past_the_limit_suggest_as_the_reader_types(site, browser):
    """The team filter as a text box (GATEWAY_REPORTS_SELECT_LIMIT=0): typing fills its
    suggestions from /reports/api/names, and the picked name filters the page."""
    password = secrets.token_urlsafe(16)
    server = site(
        debug=True,
        seed="tests.reports.browser_world",
        BROWSER_USER=USER,
        BROWSER_MANAGER=MANAGER,
        BROWSER_PASSWORD=password,
        GATEWAY_REPORTS_SELECT_LIMIT="0",  # the manager sees one team: a box already
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    watch(page, problems)
    page.goto(f"{server.url}/reports/login/")
    page.fill("#id_username", MANAGER)
    page.fill("#id_password", password)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"{server.url}/reports/")
    box = page.locator("input[name=team]")
    assert box.get_attribute("data-names") == "team"
    box.press_sequentially("prod", delay=30)
    page.wait_for_selector("#names-team option[value=product]", state="attached")
    box.fill("product")
    page.click(".filters [type=submit]")
    page.wait_for_url("**/reports/?*team=product*")
    assert page.evaluate(CHARTS_DREW) == "ok"
    page.goto(f"{server.url}/reports/monthly/")
    page.locator("input[name=team]").press_sequentially("pro", delay=30)
    page.wait_for_selector("#names-team option[value=product]", state="attached")
    screenshot(page, SCREENSHOTS, "reports-name-filter")
    assert problems == []
