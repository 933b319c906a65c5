"""The aiohttp transport under httpx's API: what the upstream receives, what the adapters see.

The loopback servers speak the providers' real wire formats; `RawServer` below is for the
cases that need control over the bytes (echoing request headers, holding an SSE stream,
closing mid-body, gzip).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import orjson
import pytest

from gateway import runtime
from gateway.providers import adapter_for
from gateway.providers.base import ProviderAdapter, ProviderError, StreamResult
from gateway.providers.transport import AiohttpTransport, _client_timeout, _httpx_error
from tests.loopback import cut, fail, ok, slow, stall
from tests.loopback_openai import OpenAIWire
from tests.loopback_wire import Behaviour
from tests.providers.support import SECRET, chat, config, drain, text_of

# A tiny HTTP/1.1 server in the test's own loop, for raw control over the bytes.

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Received(collections.namedtuple("Received", "line headers body")):
    """One request as it arrived: request line, header (name, value) pairs in order, body."""

    def names(self) -> list[str]:
        return [name.lower() for name, _ in self.headers]


async def read_request(reader: asyncio.StreamReader) -> Received:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    ]
    fields = {name.lower(): value for name, value in headers}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(fields.get("content-length") or 0))
    return Received(head[0], headers, body)


def answer(status: int = 200, body: bytes = b"ok", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """`async with RawServer(handler) as server:` runs `handler` for each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await self.handler(reader, writer)
        except asyncio.CancelledError:
            pass  # the server is stopping: end this connection quietly
        finally:
            self._tasks.discard(task)
            writer.transport.abort()


def echo(seen: list[Received]) -> Handler:
    """Answers 200 "ok" to every request of a keep-alive connection, recording each."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(answer())
            await writer.drain()

    return handle


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        yield client


@pytest.fixture
async def gateway_client() -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's own client of this loop (runtime.http_client), closed afterwards."""
    yield runtime.http_client()
    await runtime.close_loop_clients()


def openai(base_url: str, client: httpx.AsyncClient, **fields) -> ProviderAdapter:
    return adapter_for(config("openai", base_url=base_url, **fields), client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


# Round trips through the adapters.


async def test_the_gateway_client_is_httpx_over_the_aiohttp_transport(gateway_client):
    assert isinstance(gateway_client, httpx.AsyncClient)
    assert isinstance(gateway_client._transport, AiohttpTransport)


async def test_a_json_completion_round_trips_through_the_openai_adapter(
    openai_server, gateway_client
):
    openai_server.script(ok("Hi there", cached_tokens=1))
    completion = await openai(openai_server.base_url, gateway_client).complete(chat())
    assert completion.body["choices"][0]["message"]["content"] == "Hi there"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (3, 2)
    assert completion.usage.cached_tokens == 1
    (request,) = openai_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.body["model"] == "upstream-model"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"


async def test_a_stream_round_trips_through_the_anthropic_adapter(anthropic_server, client):
    adapter = adapter_for(config("anthropic", base_url=anthropic_server.base_url), client)
    chunks, result = await drain(adapter, chat(stream=True, max_tokens=50))
    assert text_of(chunks) == "Hello from the loopback server."
    assert result.finish_reason == "stop"
    assert result.usage is not None and result.usage.output_tokens == 5
    assert anthropic_server.requests[0].headers["x-api-key"] == SECRET


async def test_an_error_answer_keeps_its_status_body_and_headers(openai_server, client):
    openai_server.script(fail(429, retry_after=7, message="Rate limit reached"))
    with pytest.raises(ProviderError) as caught:
        await openai(openai_server.base_url, client).complete(chat())
    assert (caught.value.status, caught.value.kind, caught.value.retry_after) == (
        429,
        "rate_limited",
        7.0,
    )
    assert caught.value.body["error"]["code"] == "rate_limit_exceeded"


async def test_sequential_requests_reuse_one_pooled_connection(client):
    seen: list[Received] = []
    async with RawServer(echo(seen)) as server:
        for _ in range(3):
            resp = await client.post(server.url + "/x", content=b"{}")
            assert (resp.status_code, resp.text) == (200, "ok")
            assert (resp.http_version, resp.reason_phrase) == ("HTTP/1.1", "X")
        assert (len(seen), server.connections) == (3, 1)


# What the upstream receives.

CASES = {  # name: (method, request options)
    "adapter post": (
        "POST",
        dict(
            content=orjson.dumps({"model": "m", "messages": []}),
            headers={"authorization": "Bearer sk-x", "content-type": "application/json"},
        ),
    ),
    "sse post": (
        "POST",
        dict(
            content=b"{}",
            headers={"content-type": "application/json", "accept": "text/event-stream"},
        ),
    ),
    "json=": ("POST", dict(json={"a": "é"})),
    "get": ("GET", dict(params={"q": "a b/ü"})),
    "empty post": ("POST", {}),
    "utf-8 header": ("POST", dict(content=b"x", headers={"x-name": "Zoë".encode()})),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_request_arrives_exactly_as_httpx_own_transport_sends_it(case, client):
    """Request line, each header (once) and body: the same as httpx's own transport sends."""
    method, options = CASES[case]
    seen: list[Received] = []
    async with RawServer(echo(seen)) as server, httpx.AsyncClient() as reference:
        for c in (reference, client):
            resp = await c.request(method, server.url + "/v1/chat/completions?x=1", **options)
            assert resp.status_code == 200
    expected, got = seen
    assert got.line == expected.line
    assert sorted(got.headers) == sorted(expected.headers)
    assert len(set(got.names())) == len(got.names()), got.headers  # each header once
    assert got.body == expected.body


async def test_a_header_value_that_is_not_utf8_goes_out_as_utf8_of_its_latin1_reading(client):
    """aiohttp can only write header strings as UTF-8; httpx's transport sends the bytes."""
    seen: list[Received] = []
    async with RawServer(echo(seen)) as server:
        await client.post(server.url, content=b"x", headers={"x-name": "Zoë".encode("latin-1")})
    (got,) = seen
    assert ("x-name", "Zoë".encode().decode("latin-1")) in got.headers


async def test_aiohttp_adds_no_header_of_its_own(client):
    """Headers removed from httpx's defaults stay out (aiohttp would add its own)."""
    seen: list[Received] = []
    for name in ("user-agent", "accept", "accept-encoding"):
        del client.headers[name]
    async with RawServer(echo(seen)) as server:
        await client.post(server.url, content=b"x")
    (got,) = seen
    assert sorted(got.names()) == ["connection", "content-length", "host"]


async def test_a_streamed_request_body_is_sent_whole_with_its_length(client):
    seen: list[Received] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with RawServer(echo(seen)) as server:
        await client.post(server.url, content=body())
    (got,) = seen
    assert got.body == b"hello world"
    assert "transfer-encoding" not in got.names()
    assert [v for n, v in got.headers if n.lower() == "content-length"] == ["11"]
    assert len(set(got.names())) == len(got.names())


async def test_the_client_does_not_follow_redirects_unless_asked(client):
    seen: list[Received] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(answer(302, b"", location="/elsewhere"))
            await writer.drain()

    async with RawServer(handle) as server:
        resp = await client.post(server.url + "/start", content=b"{}")
    assert resp.status_code == 302 and resp.headers["location"] == "/elsewhere"
    assert len(seen) == 1


async def test_env_proxies_are_honoured_and_no_proxy_bypasses_them(monkeypatch):
    proxied: list[Received] = []
    direct: list[Received] = []
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with RawServer(echo(proxied)) as proxy, RawServer(echo(direct)) as upstream:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            await client.post("http://upstream.invalid/v1/x", content=b"{}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            await client.post(upstream.url + "/v1/y", content=b"{}")
    assert [r.line for r in proxied] == ["POST http://upstream.invalid/v1/x HTTP/1.1"]
    assert [r.line for r in direct] == ["POST /v1/y HTTP/1.1"]


# What comes back.


async def test_sse_chunks_arrive_one_by_one_before_the_stream_ends(client):
    """The adapter yields the first chunk while the upstream still holds back the rest."""
    release = asyncio.Event()
    frames = OpenAIWire().frames({"model": "m", "messages": []}, Behaviour(text="one two three"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        writer.write(chunk(frames[0]) + chunk(frames[1]))
        await writer.drain()
        await release.wait()
        for frame in frames[2:]:
            writer.write(chunk(frame))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with RawServer(handle) as server, asyncio.timeout(5):
        result = StreamResult()
        texts = []
        async for c in openai(server.url, client).stream(chat(), result):
            texts.append(c["choices"][0]["delta"].get("content"))
            if texts == ["", "one"]:
                assert not release.is_set()
                release.set()
    assert texts == ["", "one", " two", " three", None]
    assert result.finish_reason == "stop"


async def test_sse_lines_are_not_buffered_by_the_transport(client):
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
        )
        await writer.drain()
        await release.wait()
        writer.write(chunk(b"data: two\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async with RawServer(handle) as server, asyncio.timeout(5):
        async with client.stream("POST", server.url, content=b"{}") as resp:
            lines = resp.aiter_lines()
            assert await anext(lines) == "data: one"
            release.set()
            assert [line async for line in lines if line] == ["data: two"]


async def test_a_gzip_encoded_body_is_decoded_by_httpx(client):
    payload = orjson.dumps({"choices": [], "text": "x" * 1000})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await read_request(reader)
        assert dict((n.lower(), v) for n, v in received.headers)["accept-encoding"].startswith(
            "gzip"
        )
        writer.write(answer(body=gzip.compress(payload), content_encoding="gzip"))
        await writer.drain()

    async with RawServer(handle) as server:
        resp = await client.post(server.url, content=b"{}")
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.content == payload
    assert resp.json()["text"] == "x" * 1000


async def test_closing_a_stream_early_closes_its_connection_and_the_next_gets_a_new_one(client):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
        )
        await writer.drain()
        await asyncio.Event().wait()

    async with RawServer(handle) as server, asyncio.timeout(5):
        async with client.stream("POST", server.url, content=b"{}") as resp:
            async for _ in resp.aiter_raw():
                break
        async with client.stream("POST", server.url, content=b"{}") as resp:
            async for _ in resp.aiter_raw():
                break
        assert server.connections == 2


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
