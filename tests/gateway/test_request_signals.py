"""Django's request signals reach their receivers on /v1 too (the API's own ASGI handler).

A receiver a project or a library (Sentry's) connects to `request_started` and
`request_finished` runs for a /v1 request as for a page of the site; Django's own receivers
are the ones the API paths do without (gateway/fastpath/asgi.py `DJANGO_OWN_RECEIVERS`).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.core.signals import request_finished, request_started

from gateway.fastpath.asgi import ApiHandler


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def _get(app, path: str) -> tuple[int, list[dict]]:
    sent: list[dict] = []
    done = asyncio.Event()
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(_scope(path), receive, send)
    return sent[0]["status"], sent


@pytest.fixture
def receivers():
    calls: list[tuple[str, object, object]] = []

    def on_started(sender, **kwargs):
        calls.append(("started", sender, kwargs.get("scope", {}).get("path")))

    def on_finished(sender, **kwargs):
        calls.append(("finished", sender, threading.current_thread()))

    async def on_started_async(sender, **kwargs):
        calls.append(("started-async", sender, kwargs.get("scope", {}).get("path")))

    request_started.connect(on_started)
    request_finished.connect(on_finished)
    request_started.connect(on_started_async)
    try:
        yield calls
    finally:
        request_started.disconnect(on_started)
        request_finished.disconnect(on_finished)
        request_started.disconnect(on_started_async)


async def test_a_v1_request_sends_request_started_and_request_finished(receivers):
    status, _ = await _get(ApiHandler(), "/v1/models")  # no key: a 401, still a request
    assert status == 401
    names = [name for name, *_ in receivers]
    assert sorted(names) == ["finished", "started", "started-async"]
    assert names[-1] == "finished"
    started = [c for c in receivers if c[0].startswith("started")]
    assert all(sender is ApiHandler and path == "/v1/models" for _, sender, path in started)
    # A sync receiver runs off the event loop's thread, as Django runs it.
    assert receivers[-1][2] is not threading.main_thread()


async def test_a_refused_host_still_finishes_the_request(receivers, settings):
    settings.ALLOWED_HOSTS = ["gateway.example"]
    status, _ = await _get(ApiHandler(), "/v1/models")
    assert status == 400
    assert [name for name, *_ in receivers].count("finished") == 1


async def test_djangos_own_receivers_stay_off_the_api_path(monkeypatch):
    """The default receivers (close_old_connections & co.) are skipped: no thread hop."""
    from gateway.fastpath import asgi as asgi_api

    hops = []
    real = asgi_api.sync_to_async
    monkeypatch.setattr(asgi_api, "sync_to_async", lambda fn: hops.append(fn) or real(fn))
    status, _ = await _get(ApiHandler(), "/v1/models")
    assert status == 401
    assert hops == []
