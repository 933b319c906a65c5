"""The usage list's team filter in headless Chromium, as production serves it (DEBUG=0, after
`collectstatic`): a superuser signs in through the login form, types part of a team's name in
the sidebar's search box (the admin's autocomplete), picks the team, and the list reloads
filtered by it, with no script error on the way."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.reports.test_browser import CHROMIUM, CHROMIUM_ARGS, watch

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser, pytest.mark.slow]
USER = "browser-admin"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_the_team_filter_is_a_search_box_that_filters_the_list(site, browser):
    password = secrets.token_urlsafe(16)
    server = site(
        debug=False,
        seed="tests.reports.browser_world",
        BROWSER_USER=USER,
        BROWSER_MANAGER="browser-manager",
        BROWSER_PASSWORD=password,
    )
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    problems: list[str] = []
    watch(page, problems)
    page.goto(f"{server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", USER)
    page.fill("#id_password", password)
    page.click("[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    page.goto(f"{server.url}/admin/gateway/usagerecord/")
    page.click("select[data-field-name=team] + .select2 .select2-selection")
    page.fill(".select2-search__field", "produ")
    page.locator(".select2-results__option", has_text="product").first.click()
    page.wait_for_url("**team__id__exact=*")
    chosen = page.locator("select[data-field-name=team] option:checked").inner_text()
    assert chosen == "product"
    callers = page.locator("#result_list td.field-caller").all_inner_texts()
    assert callers and all(c.startswith("product") for c in callers), callers
    assert problems == []
