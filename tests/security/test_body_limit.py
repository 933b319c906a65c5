"""Issue 15, item 5: one request-size limit.

Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) cut in before GATEWAY_MAX_BODY_BYTES (4 MiB),
and the 413 then named the wrong limit. Now Django's is derived from the gateway's: a body of
exactly GATEWAY_MAX_BODY_BYTES is served and one byte more is a 413 that names the setting,
on the fast ASGI path (uvicorn) and through Django's own request handling alike.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.conf import settings
from django.test import Client

from tests.processes import requires_postgres, requires_real_redis
from tests.security.conftest import bearer, setup_team

pytestmark = pytest.mark.django_db(transaction=True)
LIMIT = 4 * 1024 * 1024  # the documented default


def body_of(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    head, tail = b'{"model":"sim-model","messages":[{"role":"user","content":"', b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def assert_too_large(answer_status: int, error: dict) -> None:
    assert answer_status == 413
    assert error["code"] == "request_too_large"
    assert f"the limit is {LIMIT} bytes (GATEWAY_MAX_BODY_BYTES)" in error["message"]


@pytest.mark.slow
@requires_postgres
@requires_real_redis
def test_the_fast_path_takes_the_limit_and_refuses_one_byte_more(gateways):
    secret = setup_team()
    gateway = gateways(1)[0]  # the default limit: no GATEWAY_MAX_BODY_BYTES in its env
    headers = {**bearer(secret), "Content-Type": "application/json"}
    with httpx.Client(base_url=gateway.base_url, timeout=60) as http:
        at_limit = http.post("/chat/completions", content=body_of(LIMIT), headers=headers)
        assert at_limit.status_code == 200, at_limit.text[:500]
        over = http.post("/chat/completions", content=body_of(LIMIT + 1), headers=headers)
        assert_too_large(over.status_code, over.json()["error"])

        # Sent in chunks with no Content-Length: the same limit, the same message.
        def chunks(data: bytes):
            for i in range(0, len(data), 65536):
                yield data[i : i + 65536]

        chunked = http.post("/chat/completions", content=chunks(body_of(LIMIT)), headers=headers)
        assert chunked.status_code == 200, chunked.text[:500]
        chunked = http.post(
            "/chat/completions", content=chunks(body_of(LIMIT + 1)), headers=headers
        )
        assert chunked.status_code == 413
        assert "(GATEWAY_MAX_BODY_BYTES)" in chunked.json()["error"]["message"]


def test_djangos_request_handling_has_the_same_limit():
    """The view as Django's full handler serves it (WSGI, `runserver`, the site's ASGI app):
    `request.body` applies DATA_UPLOAD_MAX_MEMORY_SIZE, which is now the same number."""
    secret = setup_team()
    client = Client(headers=bearer(secret))
    at_limit = client.post("/v1/chat/completions", body_of(LIMIT), content_type="application/json")
    assert at_limit.status_code == 200, at_limit.content[:500]
    over = client.post("/v1/chat/completions", body_of(LIMIT + 1), content_type="application/json")
    assert_too_large(over.status_code, over.json()["error"])
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == settings.GATEWAY["MAX_BODY_BYTES"] == LIMIT


async def test_the_in_process_asgi_app_has_the_same_limit(asgi_client):
    secret = await asyncio.to_thread(setup_team)
    headers = {**bearer(secret), "Content-Type": "application/json"}
    async with asgi_client as http:
        at_limit = await http.post("/v1/chat/completions", content=body_of(LIMIT), headers=headers)
        assert at_limit.status_code == 200, at_limit.text[:500]
        over = await http.post("/v1/chat/completions", content=body_of(LIMIT + 1), headers=headers)
        assert_too_large(over.status_code, over.json()["error"])
