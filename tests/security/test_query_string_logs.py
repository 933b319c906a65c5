"""Issue 16, low 2: a key sent as `?api_key=` was written to the log in full.

Against uvicorn with its access log on, both as the Procfile configures its logging
(gatewaysite/logging.json: JSON lines) and as `make run` does (DEBUG's plain lines): a
client that puts its key in the query string leaves only the parameter's name in the log.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.processes import requires_postgres, requires_real_redis
from tests.security.conftest import bearer, chat, setup_team

pytestmark = [
    pytest.mark.slow,
    requires_postgres,
    requires_real_redis,
    pytest.mark.django_db(transaction=True),
]


def test_keys_in_query_strings_never_reach_the_logs(gateways):
    secret = setup_team()
    # Production's JSON lines (its default with DEBUG off), from uvicorn's first line on.
    production = gateways(
        1, args=("--log-config", "gatewaysite/logging.json"), LOG_FORMAT="json", LOG_LEVEL="INFO"
    )
    demo = gateways(1, args=("--log-level", "info"))
    for gateway in (*production, *demo):
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            # The key in the query string only: refused (401), and logged by Django too.
            assert http.get(f"/v1/models?api_key={secret}&limit=5").status_code == 401
            # With the key in the header as well: answered, and in the access log.
            answered = http.post(
                f"/v1/chat/completions?api_key={secret}", json=chat(), headers=bearer(secret)
            )
            assert answered.status_code == 200, answered.text
            assert http.get(f"/admin/login/?token={secret}").status_code == 200
        gateway.stop()
        log = gateway.log_path.read_text()
        assert "GET /v1/models?api_key=[REDACTED]&limit=[REDACTED]" in log, log
        assert "POST /v1/chat/completions?api_key=[REDACTED]" in log, log
        assert "/admin/login/?token=[REDACTED]" in log, log
        assert secret not in log
        assert secret[:12] not in log

    lines = [json.loads(line) for line in production[0].log_path.read_text().splitlines()
             if line.startswith("{")]  # fmt: skip
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert sum("[REDACTED]" in message for message in access) == 3, access
