"""Signing in as a person does: the login form over HTTP, with its CSRF token."""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def login_form(http: httpx.Client, path: str = "/admin/login/") -> str:
    """GET the login page; the CSRF token of its form (the cookie lands in `http`)."""
    page = http.get(path)
    assert page.status_code == 200, page.text[:500]
    match = _CSRF.search(page.text)
    assert match, "no CSRF token in the login form"
    return match.group(1)


def post_login(
    http: httpx.Client, token: str, username: str, password: str, path: str = "/admin/login/"
) -> httpx.Response:
    return http.post(
        path,
        data={
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": password,
            "next": "/admin/",
        },
    )


def signed_in(base_url: str, username: str, password: str) -> httpx.Client:
    """A client signed in through the admin's login form (its session cookie set)."""
    http = httpx.Client(base_url=base_url, timeout=30)
    response = post_login(http, login_form(http), username, password)
    assert response.status_code == 302, f"login failed: {response.status_code}"
    assert "sessionid" in http.cookies
    return http
