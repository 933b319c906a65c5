"""Issue 16, low 7 (the client's side): a 1 MB header and 20,000 headers were accepted.

Against uvicorn: past GATEWAY_MAX_HEADERS headers, or GATEWAY_MAX_HEADER_BYTES of names and
values in all, a request is refused with a 431 in the endpoint's format (OpenAI's envelope
on /v1, plain text on the site) before its body is read; at the limits it is served.
"""

from __future__ import annotations

import socket

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
MAX_HEADERS, MAX_BYTES = 20, 2048


def raw_request(port: int, head: bytes) -> bytes:
    """What the server answers to a hand-made request head (20,000 headers, as the attack)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_too_many_or_too_large_headers_are_a_431(gateways):
    secret = setup_team()
    gateway = gateways(
        1, GATEWAY_MAX_HEADERS=str(MAX_HEADERS), GATEWAY_MAX_HEADER_BYTES=str(MAX_BYTES)
    )[0]
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        # httpx adds host, accept, accept-encoding, connection, user-agent, content-length and
        # content-type to a JSON POST: 7 of its own, plus the Authorization header.
        base = {**bearer(secret), "Content-Type": "application/json"}
        extra = {f"X-Pad-{i}": "v" for i in range(MAX_HEADERS - 8)}
        at_limit = http.post("/v1/chat/completions", json=chat(), headers={**base, **extra})
        assert at_limit.status_code == 200, at_limit.text

        one_more = http.post(
            "/v1/chat/completions", json=chat(), headers={**base, **extra, "X-One-More": "v"}
        )
        assert one_more.status_code == 431
        error = one_more.json()["error"]
        assert error["code"] == "request_headers_too_large"
        assert "GATEWAY_MAX_HEADERS" in error["message"]
        assert one_more.headers["x-content-type-options"] == "nosniff"

        big = http.get("/v1/models", headers={**bearer(secret), "X-Big": "a" * MAX_BYTES})
        assert big.status_code == 431
        assert "GATEWAY_MAX_HEADER_BYTES" in big.json()["error"]["message"]

        site = http.get("/admin/login/", headers={"X-Big": "a" * MAX_BYTES})
        assert site.status_code == 431
        assert site.headers["content-type"].startswith("text/plain")
        assert "GATEWAY_MAX_HEADER_BYTES" in site.text

    # The attack as it was made: 20,000 headers on one request, and one header of 1 MB.
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    answer = raw_request(gateway.port, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many
                         + b"\r\n")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"request_headers_too_large"' in answer
    huge = b"X-Huge: " + b"a" * 1_000_000 + b"\r\n"
    answer = raw_request(gateway.port, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + huge
                         + b"\r\n")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]

    # And the gateway still serves.
    assert httpx.get(gateway.url + "/healthz", timeout=10).status_code == 200
