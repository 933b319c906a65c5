"""Signing in as a manager does: the real form at /reports/login/, CSRF enforced (never
force_login for tests that prove what a manager sees)."""

from __future__ import annotations

import re

from django.test import Client

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def sign_in(username: str, password: str, *, path: str = "/reports/login/") -> Client:
    client = Client(enforce_csrf_checks=True)
    form = client.get(path)
    token = CSRF.search(form.content.decode()).group(1)
    answer = client.post(
        path,
        {"username": username, "password": password, "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302, answer.content[:300]
    return client
