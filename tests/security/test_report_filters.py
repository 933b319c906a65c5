"""Issue 16, Low 4: `/reports/` answered 500 for `?team=alpha%00` and for
`?range=custom&start=9999-12-31&end=9999-12-31`, in HTML and on the JSON API. Every filter
the reports cannot apply (a NUL or other control character, a malformed or out-of-bounds
date, start after end, a range too long, an unknown range or dimension) is now a 400 with a
clear message: an HTML page for the pages and the CSV, OpenAI-style JSON for the API.

Reproduced over HTTP against the served gateway on PostgreSQL (where a NUL in a query is an
error), signed in through the login form; the same answers in-process in every mode.
"""

from __future__ import annotations

from contextlib import closing

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.processes import requires_postgres
from tests.security.support import signed_in

PASSWORD = "reader-pw-1618"
BAD = [
    ("team=alpha%00", "team", "team must not contain control characters"),
    ("feature=chat%00bot", "feature", "feature must not contain control characters"),
    ("team=" + "a" * 65, "team", "team must be a name of at most 64 characters"),
    ("range=custom&start=9999-12-31&end=9999-12-31", "start", "start must be between"),
    ("range=custom&start=0001-01-01&end=0001-01-02", "start", "start must be between"),
    ("range=custom&start=2025-02-30&end=2025-03-01", "start", "start must be a date"),
    ("range=custom&start=2025-03-01", "end", "end must be a date"),
    ("range=custom&start=2025-03-10&end=2025-03-01", "end", "is before start"),
    ("range=custom&start=2020-01-01&end=2025-01-01", "end", "a custom range covers at most"),
    (
        "range=1y",
        "range",
        "range must be one of 24h, 48h, 7d, 30d, 90d, this-month, last-month, custom",
    ),
    ("range=7d%00", "range", "range must be one of"),
]
PAGES = ["/reports/", "/reports/spend/", "/reports/cache/", "/reports/spend.csv"]
APIS = ["/reports/api/overview", "/reports/api/spend", "/reports/api/models"]


def _check_html(response, message: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert message in response.text.replace("&#x27;", "'")
    assert "This report cannot be shown with these filters" in response.text


def _check_json(body: dict, status: int, param: str, message: str) -> None:
    assert status == 400, (status, body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert message in body["error"]["message"]


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_bad_filters_are_400s_over_http(gateways):
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    (gateway,) = gateways(1)
    with closing(signed_in(gateway.url, "root", PASSWORD)) as http:
        for query, param, message in BAD:
            for path in PAGES:
                _check_html(http.get(f"{path}?{query}"), message)
            for path in APIS:
                response = http.get(f"{path}?{query}")
                assert response.headers["content-type"] == "application/json"
                _check_json(response.json(), response.status_code, param, message)
        response = http.get("/reports/api/spend?by=nothing")
        _check_json(response.json(), response.status_code, "by", "by must be one of")
        # Good filters still answer.
        assert http.get("/reports/?range=30d&team=acme").status_code == 200
        assert http.get("/reports/api/overview?range=custom").status_code == 400
    assert httpx.get(gateway.url + "/healthz").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "param", "message"), BAD)
def test_bad_filters_are_400s_in_process(query, param, message, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.SECURE_SSL_REDIRECT = False
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = Client()
    assert client.login(username="root", password=PASSWORD)
    _check_html(client.get(f"/reports/?{query}"), message)
    response = client.get(f"/reports/api/overview?{query}")
    _check_json(response.json(), response.status_code, param, message)
