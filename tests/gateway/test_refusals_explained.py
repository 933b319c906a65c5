"""Refusals a person can explain (issue 21, Required 3): the usage record keeps which budget
or rate limit refused a request and its figures; the admin's ledger list shows the outcome
and reason first, filters by reason and by key; the overview's "Refused" card links there.

All over HTTP against the served app: the official openai SDK for the requests, and the
admin's login form and pages for the person who follows them up."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from gateway.snapshot import store
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Say hello, please"}]
PASSWORD = "a long admin passphrase 21"


@pytest.fixture
def refused(gateway_server):
    """Two refusals, as a runaway loop meets them: key "loop" past its 1 request per minute,
    and team "tight" past its daily budget."""
    make_model("gpt-4o-mini", make_provider(), input_price="0.15", output_price="0.6")
    acme, tight = make_team("acme"), make_team("tight")
    loop, loop_secret = make_key(acme, make_feature(acme, "chatbot"), rpm_limit=1, name="loop")
    capped, capped_secret = make_key(tight, make_feature(tight, "search"), name="capped")
    make_budget(tight, daily_limit_usd="0.001", alert_thresholds=[])
    store().invalidate()

    def client(secret):
        return openai.OpenAI(
            base_url=f"{gateway_server.base_url}", api_key=secret, max_retries=0,
            default_headers={"X-Gateway-Cache-TTL": "0"},
        )  # fmt: skip

    assert client(loop_secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as rate:
        client(loop_secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as budget:
        client(capped_secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    ledger.drain()
    return {"loop": loop, "capped": capped, "rate": rate.value, "budget": budget.value}


def test_the_record_keeps_which_limit_refused_and_its_figures(refused):
    loop, capped = refused["loop"], refused["capped"]
    rate = UsageRecord.objects.get(api_key=loop, status="refused")
    assert (rate.http_status, rate.error_type) == (429, "rate_limited")
    assert rate.refusal["kind"] == "rate_limit"
    assert (rate.refusal["scope"], rate.refusal["metric"], rate.refusal["limit"]) == (
        "key", "rpm", 1,
    )  # fmt: skip
    assert rate.refusal["key_prefix"] == loop.prefix and rate.refusal["team"] == "acme"
    assert (
        rate.refusal["bucket"].endswith(f"key:{loop.pk}:rpm")
        or str(loop.pk) in (rate.refusal["bucket"])
    )
    assert f"for key {loop.prefix}" in refused["rate"].message  # what the client was told

    budget = UsageRecord.objects.get(api_key=capped)
    assert (budget.status, budget.error_type) == ("refused", "budget_exceeded")
    r = budget.refusal
    assert (r["kind"], r["scope"], r["owner"], r["window"]) == ("budget", "team", "tight", "daily")
    assert r["limit_usd"] == "0.001" and Decimal(r["needed_usd"]) > Decimal("0.001")
    assert f"needs up to ${r['needed_usd']}" in refused["budget"].message


def sign_in(api_url: str) -> httpx.Client:
    from django.contrib.auth import get_user_model

    base_url = api_url.removesuffix("/").removesuffix("/v1")  # the same server serves the site
    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser = httpx.Client(base_url=base_url, follow_redirects=True)
    form = browser.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    home = browser.post(
        "/admin/login/?next=/admin/",
        data={"username": "ops", "password": PASSWORD, "csrfmiddlewaretoken": token,
              "next": "/admin/"},
        headers={"Referer": f"{base_url}/admin/login/"},
    )  # fmt: skip
    assert home.status_code == 200 and str(home.url).endswith("/admin/"), home.text[:300]
    return browser


def rows(page: httpx.Response) -> list[str]:
    """The list's rows as text, cells separated by " | "."""
    body = page.text.split('id="result_list"')[1].split("</table>")[0]
    out = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>")[1], re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        out.append(" | ".join(re.sub(r"<[^>]+>", "", c).strip() for c in cells))
    return out


def test_the_admin_list_shows_outcome_and_reason_first_with_filters(gateway_server, refused):
    loop, capped = refused["loop"], refused["capped"]
    browser = sign_in(gateway_server.base_url)
    listing = browser.get("/admin/gateway/usagerecord/")
    assert listing.status_code == 200
    headings = re.findall(r'<th scope="col" class="[^"]*?(column-[\w-]+)', listing.text)
    assert headings[:3] == ["column-created_at", "column-outcome", "column-reason"]
    assert len(headings) == 8  # fits 1280 px (tests/reports/test_browser_phone.py)
    text = "\n".join(rows(listing))
    assert f"refused 429 | rate limit rpm 1 on key {loop.prefix}…" in text
    assert re.search(
        r"refused 429 \| daily budget \$0\.001 of team tight: spent \$0\.00 \+ reserved "
        r"\$0\.00, needed \$0\.00\d+",
        text,
    ), text

    by_reason = rows(browser.get("/admin/gateway/usagerecord/", params={"reason": "rate_key"}))
    assert len(by_reason) == 1 and "rate limit rpm 1" in by_reason[0]
    budgets = rows(browser.get("/admin/gateway/usagerecord/", params={"reason": "budget_daily"}))
    assert len(budgets) == 1 and "daily budget" in budgets[0]
    by_key = rows(
        browser.get("/admin/gateway/usagerecord/", params={"api_key__id__exact": loop.pk})
    )
    assert len(by_key) == 2 and sum(" ok " in f" {r} " for r in by_key) == 1
    record = UsageRecord.objects.get(api_key=capped)
    page = browser.get(f"/admin/gateway/usagerecord/{record.pk}/change/").text
    assert page.index("daily budget $0.001 of team tight") < page.index("Request id")
    filters = " ".join(browser.get("/admin/gateway/usagerecord/").text.split())
    assert "By reason" in filters and "By API key" in filters
    # A search box for the key (the admin's autocomplete), not a link per key.
    assert 'name="api_key__id__exact"' in filters and 'data-field-name="api_key"' in filters


def test_the_overviews_refused_card_links_to_the_refused_records(gateway_server, refused):
    browser = sign_in(gateway_server.base_url)
    overview = browser.get("/reports/")
    assert overview.status_code == 200
    card = re.search(r'<a class="card card-link" id="refused-card" href="([^"]+)"', overview.text)
    assert card, "the Refused card is a link"
    href = card[1].replace("&amp;", "&")
    assert re.search(r'id="refused-card"[^>]*>.*?class="value">2<', overview.text, re.S)
    listing = browser.get(href)
    assert listing.status_code == 200 and "?e=1" not in str(listing.url)
    found = rows(listing)
    assert len(found) == 2 and all(r.split(" | ")[1] == "refused 429" for r in found)
