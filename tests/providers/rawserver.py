"""Helpers of the transport tests: a tiny HTTP/1.1 server in the test's own loop for raw
control over the bytes (echoing request headers, holding an SSE stream, closing mid-body,
gzip), and helpers shared by test_transport*.py (their fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Awaitable, Callable

import httpx

from gateway.providers import adapter_for
from gateway.providers.base import ProviderAdapter
from tests.providers.support import config

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
