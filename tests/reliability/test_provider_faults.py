"""Provider faults under load: 100 concurrent requests while the upstreams fail in every way
the issue lists. No request gets a 500, each is a fallback success or a clear error in
OpenAI's envelope, and each is in the ledger exactly once."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Iterator

import httpx
import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import (
    make_feature,
    make_key,
    make_model,
    make_provider,
    make_team,
    set_fallbacks,
)
from tests.gateway_server import free_port
from tests.loopback import LoopbackServer, cut, fail, garbage, ok, slow, stall
from tests.loopback_openai import OpenAIWire
from tests.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READ_TIMEOUT_S = 1.0  # the faulty providers' read timeout; `slow` answers wait longer
JSON_FAULTS = (
    [fail(500)] * 8
    + [fail(429, retry_after=1)] * 8
    + [fail(529)] * 8
    + [garbage()] * 8
    + [slow(READ_TIMEOUT_S + 2)] * 6
    + [stall()] * 6  # the headers, then nothing
    + [ok()] * 11
)  # 55 non-streamed requests
STREAM_FAULTS = (
    [cut(after=2)] * 5  # after the first chunk: the client sees an explicit error event
    + [stall(after=2)] * 5  # likewise, once the read timeout passes
    + [cut(after=0)] * 5  # before the first chunk: the gateway falls back
    + [ok()] * 5
)  # 20 streamed requests
REFUSED, BLACKHOLE, ALONE = 10, 10, 5  # requests to the unreachable providers


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose connects time out: a listener that never accepts, its backlog filled."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(16):
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect(("127.0.0.1", port))
        except TimeoutError:
            s.close()
            break
        fillers.append(s)
    else:
        pytest.fail("could not fill the listen backlog")
    yield port
    for s in fillers:
        s.close()
    listener.close()


@pytest.fixture
def stream_server() -> Iterator[LoopbackServer]:
    with LoopbackServer(OpenAIWire()) as server:
        yield server


def setup_chains(*, openai_url, stream_url, anthropic_url, blackhole_port) -> str:
    team = make_team("acme")
    make_feature(team, "chatbot")
    _, secret = make_key(team)
    timeouts = {"connect_timeout": READ_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}

    def openai_kind(name: str, url: str):
        return make_provider(
            name,
            kind="openai",
            base_url=url,
            api_key_env="TEST_OPENAI_API_KEY",
            options={},
            **timeouts,
        )

    claude = make_model(
        "claude",
        make_provider(
            "anthropic",
            kind="anthropic",
            base_url=anthropic_url,
            api_key_env="TEST_ANTHROPIC_API_KEY",
            options={},
            read_timeout=30,
        ),
    )
    for name, url in (
        ("gpt-4o", openai_url),
        ("gpt-stream", stream_url),
        ("gpt-refused", f"http://127.0.0.1:{free_port()}/v1"),
        ("gpt-blackhole", f"http://127.0.0.1:{blackhole_port}/v1"),
    ):
        set_fallbacks(make_model(name, openai_kind(name, url)), claude)
    make_model("gpt-alone", openai_kind("alone", f"http://127.0.0.1:{free_port()}/v1"))
    return secret


def body(model: str, i: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"Question number {i}"}]}


async def ask_sdk(client: openai.AsyncOpenAI, model: str, i: int) -> dict:
    """One non-streamed request through the official SDK: status, headers and JSON body."""
    try:
        raw = await client.chat.completions.with_raw_response.create(**body(model, i))
        return {
            "model": model,
            "status": raw.status_code,
            "headers": raw.headers,
            "json": raw.http_response.json(),
            "stream": False,
        }
    except openai.APIStatusError as exc:
        return {
            "model": model,
            "status": exc.status_code,
            "headers": exc.response.headers,
            "json": exc.response.json(),
            "stream": False,
        }


async def ask_stream(http: httpx.AsyncClient, i: int) -> dict:
    response = await http.post("/chat/completions", json={**body("gpt-stream", i), "stream": True})
    return {
        "model": "gpt-stream",
        "status": response.status_code,
        "headers": response.headers,
        "text": response.text,
        "stream": True,
    }


async def burst(base_url: str, secret: str) -> list[dict]:
    headers = {"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"}
    limits = httpx.Limits(max_connections=200)
    async with (
        openai.AsyncOpenAI(
            base_url=base_url,
            api_key=secret,
            max_retries=0,
            timeout=60,
            default_headers=headers,
            http_client=httpx.AsyncClient(limits=limits),
        ) as client,
        httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            limits=limits,
            headers={**headers, "Authorization": f"Bearer {secret}"},
        ) as http,
    ):
        models = (
            ["gpt-4o"] * len(JSON_FAULTS)
            + ["gpt-refused"] * REFUSED
            + ["gpt-blackhole"] * BLACKHOLE
            + ["gpt-alone"] * ALONE
        )
        calls = [ask_sdk(client, m, i) for i, m in enumerate(models)]
        calls += [ask_stream(http, i) for i in range(len(STREAM_FAULTS))]
        return await asyncio.gather(*calls)


def assert_envelope(result: dict) -> None:
    error = result["json"]["error"]
    assert error["message"] and error["type"] and error["code"], result["json"]


def test_100_concurrent_requests_through_every_provider_fault_get_no_500_and_one_record_each(
    settings,
    monkeypatch,
    openai_server,
    stream_server,
    anthropic_server,
    blackhole,
    gateway_server,
):
    # A breaker that never opens: every request meets the fault it was scripted with.
    settings.GATEWAY = {**settings.GATEWAY, "CIRCUIT_FAILURES": 100_000}
    monkeypatch.setenv("TEST_OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TEST_ANTHROPIC_API_KEY", "sk-ant")
    secret = setup_chains(
        openai_url=openai_server.base_url,
        stream_url=stream_server.base_url,
        anthropic_url=anthropic_server.base_url,
        blackhole_port=blackhole,
    )
    openai_server.script(*JSON_FAULTS)
    stream_server.script(*STREAM_FAULTS)

    results = asyncio.run(burst(gateway_server.base_url, secret))

    assert len(results) == 100
    assert [r["status"] for r in results if r["status"] >= 500 and r["status"] != 502] == []
    by_model = collections.defaultdict(list)
    for r in results:
        by_model[r["model"]].append(r)
    for model in ("gpt-4o", "gpt-refused", "gpt-blackhole"):
        assert {r["status"] for r in by_model[model]} == {200}, model
        assert all(r["json"]["choices"][0]["message"]["content"] for r in by_model[model])
    providers = collections.Counter(r["headers"]["x-gateway-provider"] for r in by_model["gpt-4o"])
    assert providers["anthropic"] >= len(JSON_FAULTS) - 11  # every fault fell back
    for model in ("gpt-refused", "gpt-blackhole"):
        assert {r["headers"]["x-gateway-provider"] for r in by_model[model]} == {"anthropic"}
        assert {r["headers"]["x-gateway-attempts"] for r in by_model[model]} == {"2"}
    for r in by_model["gpt-alone"]:  # nothing to fall back to: a clear 502
        assert r["status"] == 502
        assert_envelope(r)
        assert r["json"]["error"]["code"] == "all_providers_failed"
        assert "connection error" in r["json"]["error"]["message"]
    streams = by_model["gpt-stream"]
    assert {r["status"] for r in streams} == {200}
    interrupted = [r for r in streams if '"code":"stream_interrupted"' in r["text"]]
    finished = [r for r in streams if r["text"].endswith("data: [DONE]\n\n")]
    assert len(interrupted) + len(finished) == len(streams)
    assert not any(r["text"].endswith("data: [DONE]\n\n") for r in interrupted)
    assert len(interrupted) >= 10  # the streams cut or stalled after their first chunk
    assert len(openai_server.requests) == len(JSON_FAULTS)
    assert len(stream_server.requests) == len(STREAM_FAULTS)

    request_ids = {r["headers"]["x-request-id"] for r in results}
    assert len(request_ids) == 100

    def drained() -> bool:
        ledger.drain()
        return UsageRecord.objects.count() >= 100

    wait_for(drained, timeout=15, what="100 ledger records")
    assert UsageRecord.objects.count() == 100
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == request_ids
    for model, error in (("gpt-refused", "connection error"), ("gpt-blackhole", "timed out")):
        logs = UsageRecord.objects.filter(requested_model=model).values_list(
            "attempt_log", flat=True
        )
        assert all(error in log[0]["error"] for log in logs), list(logs)
    statuses = collections.Counter(UsageRecord.objects.values_list("status", flat=True))
    assert statuses["error"] == ALONE
    assert statuses["stream_error"] == len(interrupted)
