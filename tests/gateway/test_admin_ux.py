"""The admin as a non-developer walks it: signed in through the login form, every change a
POST carrying the page's CSRF token (issue 21, "What the admin review showed")."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from gateway.models import ApiKey
from tests.factories import make_feature, make_key, make_team

pytestmark = pytest.mark.django_db

PASSWORD = "a long admin passphrase 21"


def csrf(page) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)[1].decode()


def post(client: Client, url: str, data: dict, **kw):
    """Submit a form the way a browser does: GET the page for its token, then POST."""
    token = csrf(client.get(url))
    return client.post(url, {**data, "csrfmiddlewaretoken": token}, **kw)


@pytest.fixture
def admin(django_user_model, settings) -> Client:
    settings.SECURE_SSL_REDIRECT = False
    django_user_model.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/?next=/admin/")
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "ops",
            "password": PASSWORD,
            "csrfmiddlewaretoken": csrf(page),
            "next": "/admin/",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    return client


def messages_of(page) -> list[tuple[str, str]]:
    return (
        re.findall(
            rb'<li class="(\w+)">(.*?)</li>',
            page.content.split(b'class="messagelist"')[1].split(b"</ul>")[0],
        )
        if b'class="messagelist"' in page.content
        else []
    )


# --- Revoking a key ---------------------------------------------------------------------


def test_the_keys_own_page_offers_revoke_with_a_confirmation(admin):
    key, _ = make_key(make_team("acme"))
    change = admin.get(f"/admin/gateway/apikey/{key.pk}/change/")
    revoke_url = f"/admin/gateway/apikey/{key.pk}/revoke/"
    assert revoke_url.encode() in change.content and b"Revoke this key" in change.content

    confirm = admin.get(revoke_url)
    assert confirm.status_code == 200 and b"Yes, revoke this key" in confirm.content
    key.refresh_from_db()
    assert key.revoked_at is None  # looking at the confirmation changes nothing

    assert Client(enforce_csrf_checks=True).post(revoke_url).status_code in (302, 403)
    key.refresh_from_db()
    assert key.revoked_at is None  # not signed in: nothing happens
    done = post(admin, revoke_url, {}, follow=True)
    key.refresh_from_db()
    assert key.revoked_at is not None and ApiKey.objects.filter(pk=key.pk).exists()
    assert done.redirect_chain[-1][0] == f"/admin/gateway/apikey/{key.pk}/change/"
    assert [(c, t) for c, t in messages_of(done) if c == b"success"]
    assert b"Revoke this key" not in done.content and b"was revoked on" in done.content

    again = post(admin, revoke_url, {}, follow=True)
    assert [c for c, _ in messages_of(again)] == [b"warning"]
    assert b"Already revoked, nothing changed" in again.content


def test_a_post_without_the_csrf_token_revokes_nothing(admin):
    key, _ = make_key(make_team("acme"))
    response = admin.post(f"/admin/gateway/apikey/{key.pk}/revoke/")
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_bulk_revoke_asks_first_and_warns_about_revoked_keys(admin):
    team = make_team("acme")
    (fresh, _), (old, _), (kept, _) = make_key(team), make_key(team), make_key(team)
    post(admin, f"/admin/gateway/apikey/{old.pk}/revoke/", {})
    old.refresh_from_db()
    revoked_on = old.revoked_at

    listing = "/admin/gateway/apikey/"
    chosen = {"action": "revoke_keys", "_selected_action": [fresh.pk, old.pk]}
    ask = post(admin, listing, chosen)
    assert ask.status_code == 200 and b"Yes, revoke these 2 keys" in ask.content
    assert b"already revoked" in ask.content
    fresh.refresh_from_db()
    assert fresh.revoked_at is None  # nothing happens before the confirmation

    token = csrf(ask)  # the confirmation page's own form
    done = admin.post(
        listing, {**chosen, "confirmed": "yes", "csrfmiddlewaretoken": token}, follow=True
    )
    levels = [c for c, _ in messages_of(done)]
    assert levels == [b"success", b"warning"]
    assert f"Revoked 1 key(s): {fresh.prefix}".encode() in done.content
    assert f"Already revoked, nothing changed: {old.prefix}".encode() in done.content
    for k in (fresh, old, kept):
        k.refresh_from_db()
    assert fresh.revoked_at is not None and old.revoked_at == revoked_on
    assert kept.revoked_at is None

    only_old = admin.post(
        listing,
        {
            "action": "revoke_keys",
            "_selected_action": [old.pk],
            "confirmed": "yes",
            "csrfmiddlewaretoken": token,
        },
        follow=True,
    )
    assert [c for c, _ in messages_of(only_old)] == [b"warning"]
    assert b"success" not in b"".join(c for c, _ in messages_of(only_old))


# --- Creating a key ---------------------------------------------------------------------


def test_the_feature_dropdown_is_tagged_by_team_and_limited_from_a_teams_link(admin):
    acme, other = make_team("acme"), make_team("other")
    mine, theirs = make_feature(acme, "chatbot"), make_feature(other, "search")
    page = admin.get("/admin/gateway/apikey/add/")
    assert f'value="{mine.pk}" data-team="{acme.pk}"'.encode() in page.content
    assert f'value="{theirs.pk}" data-team="{other.pk}"'.encode() in page.content
    assert b"gateway/apikey_form.js" in page.content
    from_team = admin.get(f"/admin/gateway/apikey/add/?team={acme.pk}")
    assert f'value="{mine.pk}" data-team'.encode() in from_team.content
    assert f'value="{theirs.pk}" data-team'.encode() not in from_team.content

    refused = post(admin, "/admin/gateway/apikey/add/", {"team": acme.pk, "feature": theirs.pk})
    assert b"The feature belongs to another team." in refused.content
    assert not ApiKey.objects.exists()


def test_a_new_key_comes_with_a_copy_button_the_base_url_and_a_curl_line(admin):
    team = make_team("acme")
    feature = make_feature(team, "chatbot")
    page = post(admin, "/admin/gateway/apikey/add/", {"team": team.pk, "feature": feature.pk})
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    secret = page.context["secret"]
    body = page.content.decode()
    assert f'value="{secret}"' in body
    assert 'data-copy="api-key-secret"' in body and "gateway/copy.js" in body
    assert 'value="http://testserver/v1"' in body
    assert (
        "curl http://testserver/v1/chat/completions -H &quot;Authorization: Bearer "
        "$GATEWAY_API_KEY&quot;" in body
    )
    assert secret not in page.context["curl"]  # the secret is not pasted into shell history


# --- Budgets: thresholds as people type them, readable labels ----------------------------


def budget_form(team, **overrides) -> dict:
    return {
        "scope": "team",
        "team": team.pk,
        "feature": "",
        "hard": "on",
        "reservation": "cap",
        "enabled": "on",
        "daily_limit_usd": "2.00",
        "monthly_limit_usd": "",
        "alert_thresholds": "80, 100",
        "alert_emails": "",
        "webhook_url": "",
        **overrides,
    }


def test_alert_thresholds_are_typed_as_80_comma_100(admin):
    from budgets.models import Budget

    team = make_team("acme")
    page = admin.get(f"/admin/budgets/budget/add/?team={team.pk}")
    assert b"Daily limit (USD)" in page.content and b"Alert thresholds (%)" in page.content
    assert b'value="50, 80, 100"' in page.content  # the default, written the same way
    saved = post(admin, "/admin/budgets/budget/add/", budget_form(team), follow=True)
    assert saved.status_code == 200
    budget = Budget.objects.get()
    assert budget.alert_thresholds == [80, 100]
    change = admin.get(f"/admin/budgets/budget/{budget.pk}/change/")
    assert b'value="80, 100"' in change.content

    url = f"/admin/budgets/budget/{budget.pk}/change/"
    for typed, error in [
        ("80, lots", b"Type whole percentages separated by commas"),
        ("0, 80", b"Thresholds are a list of whole percentages"),
        ("80, 5000", b"Thresholds are a list of whole percentages"),
    ]:
        refused = post(admin, url, budget_form(team, alert_thresholds=typed))
        assert refused.status_code == 200 and error in refused.content, typed
    post(admin, url, budget_form(team, alert_thresholds="[100, 50%, 80]"))
    budget.refresh_from_db()
    assert budget.alert_thresholds == [50, 80, 100]


def test_labels_read_as_words(admin):
    team = make_team("acme", rpm_limit=60)
    page = admin.get(f"/admin/gateway/team/{team.pk}/change/").content
    assert b"Requests per minute" in page and b"Tokens per minute" in page
    assert b"Rpm limit" not in page
    listing = admin.get("/admin/gateway/team/").content
    assert b"Requests per minute" in listing and b"Rpm limit" not in listing
    key_page = admin.get("/admin/gateway/apikey/add/").content
    assert b"Requests per minute" in key_page and b"Output cap (tokens)" in key_page


# --- Fallbacks and circuit events -------------------------------------------------------


def test_fallback_heading_and_new_rows_follow_the_last_position(admin):
    from tests.factories import make_model, make_provider, set_fallbacks

    provider = make_provider()
    first, second, third, fourth = (make_model(n, provider) for n in "abcd")
    set_fallbacks(first, second, third)  # positions 0 and 1
    page = admin.get(f"/admin/gateway/languagemodel/{first.pk}/change/").content.decode()
    assert "Fallbacks (tried in order of position)" in page
    assert "(tried in order of position)s" not in page.lower()
    new_row = re.search(r'name="fallback_links-2-position"[^>]*value="(\d+)"', page) or re.search(
        r'value="(\d+)"[^>]*name="fallback_links-2-position"', page
    )
    assert new_row[1] == "2"
    template_row = re.search(r'name="fallback_links-__prefix__-position"[^>]*value="(\d+)"', page)
    assert template_row[1] == "3"


def test_circuit_events_are_read_only(admin):
    from django.utils import timezone

    from reports.models import CircuitEvent

    event = CircuitEvent.objects.create(provider="openai", opened_at=timezone.now())
    assert admin.get("/admin/reports/circuitevent/add/").status_code == 403
    change = admin.get(f"/admin/reports/circuitevent/{event.pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content
    posted = post(
        admin, f"/admin/reports/circuitevent/{event.pk}/change/", {"provider": "tampered"}
    )
    assert posted.status_code == 403
    event.refresh_from_db()
    assert event.provider == "openai"


# --- The team page ----------------------------------------------------------------------


def test_the_team_page_shows_budgets_keys_and_this_months_spend(admin, redis_sync):
    from decimal import Decimal

    from django.utils import timezone

    from budgets.keys import budget_keys
    from budgets.windows import current_windows
    from gateway.models import UsageRecord
    from gateway.money import usd_to_units
    from tests.factories import make_budget

    team, other = make_team("acme"), make_team("other")
    budget = make_budget(team, daily_limit_usd="2.00", monthly_limit_usd="40")
    make_budget(other, daily_limit_usd="9.00")
    (live, _), (gone, _) = make_key(team, name="web"), make_key(team)
    post(admin, f"/admin/gateway/apikey/{gone.pk}/revoke/", {})
    make_key(other)
    now = timezone.now()
    for i, (owner, cost) in enumerate([(team, "1.25"), (team, "0.50"), (other, "7")]):
        UsageRecord.objects.create(
            request_id=f"r{i}", created_at=now, team=owner, cost_usd=Decimal(cost)
        )
    daily, _ = current_windows(team.timezone)
    redis_sync.set(
        budget_keys(budget.team_id, budget.pk, daily.key).spent, usd_to_units(Decimal("1.75"))
    )

    page = admin.get(f"/admin/gateway/team/{team.pk}/change/").content.decode()
    summary = " ".join(page.split('id="team-summary"')[1].split("<fieldset")[0].split())
    assert "<strong>$1.75</strong> spent over 2 requests" in summary
    assert "$2.00" in summary and "$40.00" in summary and "$9.00" not in summary
    assert "<td>$1.75</td>" in summary  # the budget's live spend today, from Redis
    assert f"{live.prefix}…" in summary and f"{gone.prefix}…" in summary
    assert 'class="key-active">active' in summary and 'class="key-revoked">revoked' in summary
    assert f"/admin/budgets/budget/add/?team={team.pk}" in summary
    assert f"/admin/gateway/apikey/add/?team={team.pk}" in summary
    assert f"/admin/budgets/budget/{budget.pk}/change/" in summary
    # The links open forms for this team.
    add_budget = admin.get(f"/admin/budgets/budget/add/?team={team.pk}").content.decode()
    assert re.search(rf'<option value="{team.pk}" selected>acme</option>', add_budget)
