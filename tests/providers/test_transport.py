"""The aiohttp transport under httpx's API: what the upstream receives, what the adapters see.

The loopback servers speak the providers' real wire formats; `RawServer`
(tests/providers/rawserver.py) is for the cases that need control over the bytes. Failures
and cancellation: test_transport_failures.py.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from gateway.fastpath.transport import AiohttpTransport
from gateway.providers import adapter_for
from gateway.providers.base import ProviderError, StreamResult
from tests.loopback import fail, ok
from tests.loopback_anthropic import AnthropicWire
from tests.loopback_openai import OpenAIWire
from tests.loopback_wire import Behaviour
from tests.providers.rawserver import (
    RawServer,
    Received,
    answer,
    chunk,
    echo,
    openai,
    read_request,
)
from tests.providers.support import SECRET, chat, config, drain, text_of

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


async def test_the_gateway_client_sends_no_cookie_back_to_a_provider(gateway_client):
    """Provider APIs set cookies (load balancers' affinity); the gateway keeps none."""
    seen: list[Received] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(answer(**{"set-cookie": "affinity=node-7; Path=/"}))
            await writer.drain()

    async with RawServer(handle) as server:
        for _ in range(2):
            resp = await gateway_client.post(server.url + "/x", content=b"{}")
            assert resp.headers["set-cookie"].startswith("affinity=")
    assert [r.names().count("cookie") for r in seen] == [0, 0]
    assert not gateway_client.cookies


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


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_finished_stream_gives_its_connection_back_when_the_body_ends_a_moment_later(
    client, kind
):
    """The adapter stops at its protocol's last event ([DONE], message_stop); the chunked
    body's own end often comes in a later read. The stream waits for it, so the connection
    goes back to the pool instead of being closed (a new one costs a TCP and a TLS
    handshake to the provider, on the next request's time to first token)."""
    wire = OpenAIWire() if kind == "openai" else AnthropicWire()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            received = await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for frame in wire.frames(orjson.loads(received.body), Behaviour()):
                writer.write(chunk(frame))
            await writer.drain()
            await asyncio.sleep(0.01)  # the body's end, in a read of its own
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with RawServer(handle) as server, asyncio.timeout(5):
        adapter = adapter_for(config(kind, base_url=server.url + wire.base_path), client)
        for _ in range(3):
            chunks, result = await drain(adapter, chat(stream=True, max_tokens=50))
            assert text_of(chunks) and result.finish_reason == "stop"
        assert server.connections == 1


async def test_a_stream_whose_body_does_not_end_after_its_last_event_is_closed(client):
    """A provider that sends [DONE] and keeps the body open: the answer is complete at once,
    and the connection, which cannot be reused, is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for frame in OpenAIWire().frames(orjson.loads(received.body), Behaviour()):
            writer.write(chunk(frame))
        await writer.drain()
        await asyncio.Event().wait()

    async with RawServer(handle) as server, asyncio.timeout(5):
        adapter = openai(server.url + "/v1", client)
        for _ in range(2):
            started = asyncio.get_running_loop().time()
            chunks, result = await drain(adapter, chat(stream=True, max_tokens=50))
            assert text_of(chunks) and result.finish_reason == "stop"
            assert asyncio.get_running_loop().time() - started < 1
        assert server.connections == 2


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
