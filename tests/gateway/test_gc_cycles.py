"""A request leaves nothing for the cyclic GC: what it allocated is freed by reference counting
the moment it ends.

Garbage in reference cycles waits for a collection instead, and collections come more often
the more of it there is. Their pauses grow with the requests in flight: with 100 requests
in flight a worker paused 10-40 ms for each young collection and 200 ms for an older one,
stalling every request in it (issue 6's 500 ms scenario). Each request used to leave about
70 such objects: Django's disconnect listener raised `RequestAborted` into a traceback that
held the handler's frame, and DRF's view and request pointed at each other.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json

import pytest
from asgiref.sync import async_to_sync

from gateway import runtime
from tests.factories import (
    make_budget,
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
)
from tests.loopback import ok
from tests.processes import one_redis_only

pytestmark = pytest.mark.django_db(transaction=True)


async def call(app, *, secret: str, body: dict) -> tuple[int, str]:
    """One request through the ASGI app, with the disconnect a server reports once the
    response is sent (as uvicorn does): its status and X-Gateway-Cache."""
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {secret}".encode()),
        (b"x-gateway-feature", b"chatbot"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    complete = asyncio.Event()
    answer: dict = {}
    received = False

    async def receive() -> dict:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer.update(message)
        elif not message.get("more_body", False):
            complete.set()

    await app(scope, receive, send)
    cache = {name.lower(): value for name, value in answer["headers"]}[b"x-gateway-cache"]
    return answer["status"], cache.decode()


REQUESTS = {  # name: (model, body changes, expected status and X-Gateway-Cache)
    "upstream call": ("gpt-4o", {}, (200, "miss")),
    "upstream stream": ("gpt-4o", {"stream": True}, (200, "miss")),
    "simulated, cache miss": ("sim-model", {}, (200, "miss")),
    "cache hit": ("sim-model", {"messages": [{"role": "user", "content": "same"}]}, (200, "hit")),
    "invalid body": ("sim-model", {"messages": "not a list"}, (400, "bypass")),
    "unknown model": ("no-such-model", {}, (404, "bypass")),
}


@pytest.mark.parametrize("name", REQUESTS)
@one_redis_only
def test_a_request_leaves_no_garbage_in_reference_cycles(name, openai_server, monkeypatch):
    from gatewaysite.asgi import http_application

    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_budget(team, daily_limit_usd="100")
    _, secret = make_key(team)
    upstream = make_provider(
        "openai",
        kind="openai",
        base_url=openai_server.base_url,
        api_key_env="TEST_OPENAI_API_KEY",
        options={},
    )
    make_model("gpt-4o", upstream)
    make_model("sim-model", make_provider("sim"))
    model, changes, expected = REQUESTS[name]
    openai_server.script(*[ok() for _ in range(20)])

    async def requests() -> tuple[list[tuple[int, str]], collections.Counter]:
        def body(n: int) -> dict:
            messages = [{"role": "user", "content": f"question {n}"}]
            return {"model": model, "messages": messages, **changes}

        try:
            for n in range(3):  # warm: keys, config, connections, the cache entry
                await call(http_application, secret=secret, body=body(n))
            while gc.collect():  # earlier tests' garbage, finalizers' garbage included
                pass
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            answers = [
                await call(http_application, secret=secret, body=body(n)) for n in range(3, 13)
            ]
            gc.collect()
            return answers, collections.Counter(type(o).__qualname__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
            await runtime.close_loop_clients()

    answers, garbage = async_to_sync(requests)()

    assert answers == [expected] * 10
    assert not garbage, f"left in reference cycles by 10 requests: {dict(garbage)}"
