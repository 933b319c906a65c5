"""Managers sign in to the dashboards as the README says, over HTTP against the served app
(uvicorn, tests/site_server.py): a manager made by `createmanager` signs in through the real
form at /reports/login/ (CSRF cookie and token included), is refused with a wrong password,
sees only their teams, changes their password and signs out. Failed sign-ins there count
against the same limit as the admin's login form."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import httpx
import pytest

from gateway import loginguard
from tests.site_server import manage, site_environment

pytestmark = pytest.mark.slow

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
WRONG = "Please enter a correct username and password"


def create_manager(tmp_path: Path, username: str, password: str, *options: str) -> None:
    """The operator's command, in the served site's own environment (its database)."""
    env = site_environment(tmp_path, debug=True, static_root=tmp_path / "no-collectstatic")
    env["MANAGER_PASSWORD"] = password
    manage("createmanager", username, "--noinput", *options, env=env, log=tmp_path / "cm.log")


def form_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    assert client.cookies.get("csrftoken"), "the form sets no CSRF cookie"
    return CSRF_INPUT.search(page.text).group(1)


def sign_in(client: httpx.Client, username: str, password: str, *, path="/reports/login/"):
    token = form_token(client, path)
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token}
    return client.post(path, data=data, headers={"Referer": str(client.base_url) + path})


def team_options(html: str) -> set[str]:
    select = re.search(r'<select name="team">(.*?)</select>', html, re.S).group(1)
    return set(re.findall(r'<option value="([^"]+)"', select))


def test_a_manager_signs_in_through_the_form_and_sees_only_their_teams(site, tmp_path):
    server = site(debug=True, seed="tests.reports.login_world")
    password, new_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    create_manager(tmp_path, "mia", password, "--teams", "product", "--email", "mia@example.com")

    with httpx.Client(base_url=server.url, timeout=10) as client:
        # A stranger is sent to the managers' sign-in page, not the admin's.
        first = client.get("/reports/spend/?by=team")
        assert first.status_code == 302
        assert first.headers["location"] == "/reports/login/?next=/reports/spend/%3Fby%3Dteam"
        login_page = client.get(first.headers["location"])
        assert "Sign in to the dashboards" in login_page.text
        assert "/static/reports/reports.css" in login_page.text  # the dashboards' style

        # The form without its CSRF token is refused; a wrong password is refused and counted.
        bare = httpx.post(
            server.url + "/reports/login/", data={"username": "mia", "password": password}
        )
        assert bare.status_code == 403
        wrong = sign_in(client, "mia", password + "x")
        assert wrong.status_code == 200 and WRONG in wrong.text
        assert "sessionid" not in client.cookies

        token = form_token(client, login_page.url.raw_path.decode())
        signed_in = client.post(
            "/reports/login/",
            data={
                "username": "mia",
                "password": password,
                "csrfmiddlewaretoken": token,
                "next": "/reports/spend/?by=team",
            },
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        assert signed_in.headers["location"] == "/reports/spend/?by=team"
        assert client.cookies.get("sessionid")

        # Least privilege: her team only, in the page, its filters and the JSON API.
        spend = client.get("/reports/spend/?by=team")
        assert spend.status_code == 200
        assert team_options(spend.text) == {"product"}
        assert "platform" not in spend.text
        body = client.get("/reports/api/spend?by=team").json()
        assert [s["name"] for s in body["series"]] == ["product"]
        assert body["total_usd"] == "1.2500000000"
        assert client.get("/reports/api/overview?team=platform").json()["totals"]["requests"] == 0
        assert client.get("/admin/").status_code == 302  # not staff: no admin

        # Password change through its form, then sign out (a POST with the CSRF token).
        token = form_token(client, "/reports/password/")
        changed = client.post(
            "/reports/password/",
            data={
                "old_password": password,
                "new_password1": new_password,
                "new_password2": new_password,
                "csrfmiddlewaretoken": token,
            },
        )
        assert changed.status_code == 302
        assert changed.headers["location"] == "/reports/password/done/"
        assert client.get("/reports/").status_code == 200  # the session survives the change
        token = CSRF_INPUT.search(client.get("/reports/").text).group(1)
        out = client.post("/reports/logout/", data={"csrfmiddlewaretoken": token})
        assert out.status_code == 302 and out.headers["location"] == "/reports/login/"
        assert client.get("/reports/").status_code == 302

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert sign_in(client, "mia", password).status_code == 200  # the old one is gone
        assert sign_in(client, "mia", new_password).status_code == 302

    # A manager given no team signs in and is told so, with no figure of anyone's.
    create_manager(tmp_path, "noah", password)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert sign_in(client, "noah", password).status_code == 302
        empty = client.get("/reports/")
        assert empty.status_code == 200
        assert "No team is assigned to you yet" in empty.text
        assert "product" not in empty.text and "platform" not in empty.text
    assert "Traceback" not in server.output()


def test_failed_sign_ins_on_both_forms_share_the_admins_limit(site, tmp_path):
    # One worker: on the embedded defaults each process has its own Redis stand-in.
    server = site(debug=True, seed="tests.reports.login_world", workers=1)
    password = secrets.token_urlsafe(12)
    create_manager(tmp_path, "mia", password, "--teams", "product")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        failures = [
            sign_in(client, "mia", "wrong", path="/admin/login/").status_code for _ in range(3)
        ] + [sign_in(client, "mia", "wrong").status_code for _ in range(2)]
        assert failures == [200] * loginguard.MAX_FAILURES
        # The sixth attempt is refused on the managers' form, even with the right password,
        # and on the admin's: the new form is no way around the admin's brute-force limit.
        refused = sign_in(client, "mia", password)
        assert refused.status_code == 429
        assert "Too many failed login attempts" in refused.text
        assert "sessionid" not in client.cookies
        assert sign_in(client, "mia", password, path="/admin/login/").status_code == 429
        # Another username from the same address is not locked out.
    create_manager(tmp_path, "noah", password, "--teams", "platform")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert sign_in(client, "noah", password).status_code == 302
