"""Issue 16, low 1: `/v1` skipped Django's host and header checks.

Against uvicorn in production mode (DEBUG=0, ALLOWED_HOSTS set): a request to `/v1/models`
with a foreign Host header got 200 where `/admin` gave 400, and API responses had no
`X-Content-Type-Options: nosniff`. Now the fast path checks ALLOWED_HOSTS (a 400 in OpenAI's
envelope) and answers with the security headers the site's middleware adds, HSTS included on
HTTPS when it is configured.
"""

from __future__ import annotations

import httpx
import pytest

from tests.processes import requires_postgres, requires_real_redis
from tests.security.conftest import bearer, setup_team

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]
HTTPS = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy says it


def test_v1_checks_the_host_and_sends_the_security_headers(gateways):
    secret = setup_team()
    gateway = gateways(
        1, DEBUG="0", ALLOWED_HOSTS="gateway.example.com", SECURE_HSTS_SECONDS="3600"
    )[0]
    auth = {**bearer(secret), **HTTPS}

    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        evil = http.get("/v1/models", headers={**auth, "Host": "evil.example.com"})
        assert evil.status_code == 400, evil.text
        assert evil.json()["error"]["code"] == "invalid_host"
        assert evil.headers["content-type"] == "application/json"
        assert evil.headers["x-content-type-options"] == "nosniff"
        # The site says the same of that host, as it always did.
        assert http.get("/admin/", headers={**HTTPS, "Host": "evil.example.com"}).status_code == 400
        # A chat completion with a foreign Host is refused before anything is read or billed.
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "sim-model", "messages": [{"role": "user", "content": "hi"}]},
            headers={**auth, "Host": "evil.example.com"},
        )
        assert (chat.status_code, chat.json()["error"]["code"]) == (400, "invalid_host")

        good = http.get("/v1/models", headers={**auth, "Host": "gateway.example.com"})
        assert good.status_code == 200, good.text
        assert [m["id"] for m in good.json()["data"]] == ["sim-model"]
        assert good.headers["x-content-type-options"] == "nosniff"
        assert good.headers["x-frame-options"] == "DENY"
        assert good.headers["referrer-policy"] == "same-origin"
        assert good.headers["strict-transport-security"].startswith("max-age=3600")

        refused = http.get("/v1/models", headers={**HTTPS, "Host": "gateway.example.com"})
        assert refused.status_code == 401
        assert refused.headers["x-content-type-options"] == "nosniff"

        # Probes address a process by its IP: the health check is not host-checked, and
        # still gets the headers.
        health = http.get("/healthz", headers={"Host": "10.1.2.3"})
        assert health.status_code == 200
        assert health.headers["x-content-type-options"] == "nosniff"
