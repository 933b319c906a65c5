"""GATEWAY_FAST_PATH=0 swaps each of gateway/fastpath's parts for the library's stock one
(gateway/fastpath/README.md). `make test-stock` runs the end-to-end tests that way; these
check each swap on its own."""

from __future__ import annotations

import httpx
import pytest

from gateway import runtime
from gateway.fastpath import transport
from gateway.fastpath.multiplex import Multiplexed


@pytest.fixture
def stock(settings):
    settings.GATEWAY = {**settings.GATEWAY, "FAST_PATH": False}


@pytest.fixture
def fast(settings):
    settings.GATEWAY = {**settings.GATEWAY, "FAST_PATH": True}


async def test_round_trips_use_redis_py_pipelines_when_off(stock):
    redis = runtime.make_async_redis("redis://127.0.0.1:6379/15")
    try:
        assert runtime.multiplexed(redis) is None
    finally:
        await redis.aclose()


async def test_round_trips_use_the_multiplexed_connection_when_on(fast):
    redis = runtime.make_async_redis("redis://127.0.0.1:6379/15")
    try:
        assert isinstance(runtime.multiplexed(redis), Multiplexed)
    finally:
        await runtime.close_loop_clients()
        await redis.aclose()


async def test_the_upstream_client_uses_httpx_transport_when_off(stock):
    try:
        client = runtime.http_client()
        assert isinstance(client._transport, httpx.AsyncHTTPTransport)
    finally:
        await runtime.close_loop_clients()


def _client_with_hook(seen: list[str]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"path": request.url.path})

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer), event_hooks={"request": [hook]})


@pytest.mark.parametrize("on, hooks_run", [(True, False), (False, True)])
async def test_send_skips_the_client_layer_only_on_the_fast_path(settings, on, hooks_run):
    settings.GATEWAY = {**settings.GATEWAY, "FAST_PATH": on}
    seen: list[str] = []
    async with _client_with_hook(seen) as client:
        response = await transport.send(client, httpx.Request("POST", "http://up/v1/x"))
        await response.aread()
        await response.aclose()
    assert response.json() == {"path": "/v1/x"}
    assert bool(seen) is hooks_run
