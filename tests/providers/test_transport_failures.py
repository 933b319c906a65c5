"""The aiohttp transport's failures: timeouts, refused and cut connections mapped to httpx's
exceptions and then to the adapters' ProviderError kinds; cancellation; closing."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest

from gateway import runtime
from gateway.fastpath.transport import AiohttpTransport, _client_timeout, _httpx_error
from gateway.providers.base import ProviderError, StreamResult
from tests.loopback import cut, slow, stall
from tests.providers.rawserver import (
    RawServer,
    Received,
    echo,
    free_port,
    openai,
    read_request,
    until,
)
from tests.providers.support import chat, drain, text_of

# Failures, mapped to httpx's exceptions and then to the adapters' ProviderError kinds.


async def test_a_slow_answer_is_a_read_timeout(openai_server, client):
    openai_server.script(slow(1.0), slow(1.0))
    with pytest.raises(httpx.ReadTimeout) as caught:
        await client.post(
            openai_server.base_url + "/chat/completions",
            json={"model": "m", "messages": []},
            timeout=httpx.Timeout(5.0, read=0.2),
        )
    assert isinstance(caught.value.__cause__, aiohttp.ServerTimeoutError)
    assert caught.value.request.url.path == "/v1/chat/completions"
    with pytest.raises(ProviderError) as error:
        await openai(openai_server.base_url, client, read_timeout=0.2).complete(chat())
    assert (error.value.kind, error.value.retryable) == ("timeout", True)


async def test_a_stream_stalling_mid_body_is_a_read_timeout(openai_server, client):
    openai_server.script(stall(after=2))
    with pytest.raises(ProviderError) as caught:
        await drain(openai(openai_server.base_url, client, read_timeout=0.2), chat())
    assert caught.value.kind == "timeout"
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_a_refused_connection_is_a_connect_error(client):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(httpx.ConnectError) as caught:
        await client.post(url + "/chat/completions", content=b"{}")
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    with pytest.raises(ProviderError) as error:
        await openai(url, client).complete(chat())
    assert (error.value.kind, error.value.retryable) == ("connection_error", True)


@pytest.mark.parametrize("abort", [True, False])
async def test_a_stream_cut_mid_body_raises_stream_cut(openai_server, client, abort):
    openai_server.script(cut(after=3, abort=abort))
    chunks: list[dict] = []
    with pytest.raises(ProviderError) as caught:
        async for c in openai(openai_server.base_url, client).stream(chat(), StreamResult()):
            chunks.append(c)
    assert len(chunks) == 3
    assert caught.value.kind == "stream_cut"


async def test_a_body_cut_short_is_a_remote_protocol_error(client):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b'{"choices": [')
        await writer.drain()
        writer.close()

    async with RawServer(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(server.url, content=b"{}")
        assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
        with pytest.raises(ProviderError) as error:
            await openai(server.url, client).complete(chat())
    assert error.value.kind == "connection_error"


async def test_a_server_closing_before_answering_is_a_remote_protocol_error(client):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with RawServer(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(server.url, content=b"{}")
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_an_unsupported_scheme_is_refused_like_httpx_does(client):
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.post("ftp://127.0.0.1/x", content=b"{}")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerTimeoutError("read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientConnectionError("Connection closed"), httpx.ReadError),
        (aiohttp.InvalidURL("http://"), httpx.UnsupportedProtocol),
        (aiohttp.ClientError("other"), httpx.TransportError),
    ],
)
def test_aiohttp_errors_map_to_httpx_errors(raised, expected):
    request = httpx.Request("POST", "http://upstream.test/")
    mapped = _httpx_error(raised, request)
    assert type(mapped) is expected
    assert mapped.request is request


def test_httpx_timeouts_map_to_aiohttp_timeouts():
    cache: dict = {}
    request = httpx.Request(
        "POST",
        "http://x/",
        extensions={
            "timeout": httpx.Timeout(connect=2.0, read=30.0, write=30.0, pool=3.0).as_dict()
        },
    )
    mapped = _client_timeout(cache, request.extensions["timeout"])
    assert (mapped.total, mapped.connect, mapped.sock_connect, mapped.sock_read) == (
        None,
        5.0,
        2.0,
        30.0,
    )
    unbounded = _client_timeout(cache, httpx.Timeout(None).as_dict())
    assert (unbounded.total, unbounded.connect, unbounded.sock_connect, unbounded.sock_read) == (
        None,
        None,
        None,
        None,
    )
    assert _client_timeout(cache, None).sock_read is None


# Cancellation is the caller's, never an httpx error, and the pool survives it.


async def test_cancelling_a_request_in_flight_raises_cancelled_and_the_pool_stays_usable(
    openai_server, gateway_client
):
    adapter = openai(openai_server.base_url, gateway_client)
    openai_server.script(slow(5.0), slow(5.0))
    task = asyncio.create_task(adapter.complete(chat()))
    await until(lambda: len(openai_server.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):  # the gateway's deadline: asyncio.timeout, not httpx's
        async with asyncio.timeout(0.3):
            await adapter.complete(chat())
    completion = await adapter.complete(chat())
    assert completion.body["choices"][0]["message"]["content"] == "Hello from the loopback server."


async def test_cancelling_a_stream_mid_body_raises_cancelled_and_the_pool_stays_usable(
    openai_server, client
):
    adapter = openai(openai_server.base_url, client)
    openai_server.script(stall(after=2))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in adapter.stream(chat(), StreamResult()):
            first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    chunks, result = await drain(adapter, chat())
    assert text_of(chunks) == "Hello from the loopback server."


# Closing.


async def test_aclose_is_safe_before_first_use_and_twice():
    unused = AiohttpTransport()
    await unused.aclose()
    await unused.aclose()
    transport = AiohttpTransport()
    seen: list[Received] = []
    async with RawServer(echo(seen)) as server:
        client = httpx.AsyncClient(transport=transport)
        assert (await client.post(server.url, content=b"{}")).status_code == 200
        await client.aclose()
        await transport.aclose()
    await runtime.close_loop_clients()
    await runtime.close_loop_clients()
