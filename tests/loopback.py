"""Loopback OpenAI and Anthropic servers on 127.0.0.1 for integration and end-to-end tests.

Each server is a small HTTP/1.1 server (keep-alive, Content-Length request bodies, chunked
SSE answers) on its own event loop in a background thread, so sync and async tests, the
gateway's httpx client and the official `openai` SDK all reach it over real TCP.

Script it per test; each request takes the next behaviour, then `ok()` once the script runs out:

    openai_server.script(fail(429, retry_after=1), ok("Hi there"))
    anthropic_server.script(fail(529), cut(after=3), stall(after=2), garbage(), slow(2.0))
    assert len(openai_server.requests) == 2   # what it received: .path, .headers, .body

Base URLs: `openai_server.base_url` ends in /v1 (like https://api.openai.com/v1);
`anthropic_server.base_url` has no /v1 (like https://api.anthropic.com).
Register with `pytest_plugins = ["tests.loopback"]` for the `openai_server` and
`anthropic_server` fixtures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest

from tests.loopback_anthropic import AnthropicWire
from tests.loopback_openai import OpenAIWire
from tests.loopback_wire import Behaviour, Wire

__all__ = [
    "Behaviour",
    "LoopbackServer",
    "Recorded",
    "cut",
    "fail",
    "garbage",
    "ok",
    "slow",
    "stall",
    "stream_error",
    "tool_call",
]


def ok(text: str | None = None, **options: Any) -> Behaviour:
    """A successful answer (options: any `Behaviour` field, e.g. usage=False, cached_tokens=5)."""
    return Behaviour(**({"text": text} if text is not None else {}), **options)


def fail(status: int, **options: Any) -> Behaviour:
    """An HTTP error with the provider's real error body (options: retry_after, message, ...)."""
    return Behaviour(status=status, **options)


def slow(seconds: float, **options: Any) -> Behaviour:
    """A successful answer that waits `seconds` before the first byte."""
    return Behaviour(delay=seconds, **options)


def garbage(**options: Any) -> Behaviour:
    """HTTP 200 with an HTML page instead of JSON or SSE."""
    return Behaviour(garbage=True, **options)


def stall(after: int = 1, **options: Any) -> Behaviour:
    """Streams `after` SSE frames then hangs (a JSON answer hangs after its headers)."""
    return Behaviour(stall_after=after, **options)


def cut(after: int = 1, *, abort: bool = True, **options: Any) -> Behaviour:
    """Streams `after` SSE frames then ends early: drops the connection (abort) or ends the
    chunked body cleanly without the terminator ([DONE] / message_stop)."""
    return Behaviour(cut_after=after, cut_abort=abort, **options)


def stream_error(after: int = 1, **options: Any) -> Behaviour:
    """Streams `after` SSE frames then the provider's in-stream error event."""
    return Behaviour(error_after=after, **options)


def tool_call(name: str, arguments: dict[str, Any], **options: Any) -> Behaviour:
    """Answers with one call of tool `name` (text defaults to none)."""
    return Behaviour(tool_call=(name, arguments), **{"text": "", **options})


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw bytes when the body was not JSON


_PHRASES = {529: "Overloaded"}
_GARBAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


class LoopbackServer:
    """One fake provider on 127.0.0.1:<random port>. Use `start()`/`stop()` or `with`."""

    def __init__(self, wire: Wire, *, api_key: str | None = None) -> None:
        self.wire = wire
        self.api_key = api_key  # when set, requests with another key get the provider's 401
        self.requests: list[Recorded] = []
        self.port = 0
        self._script: collections.deque[Behaviour] = collections.deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.wire.base_path

    def script(self, *behaviours: Behaviour) -> LoopbackServer:
        """Queue the answers to the next requests, in order."""
        self._script.extend(behaviours)
        return self

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._run, name="loopback-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the loopback server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # the server is stopping: end this connection quietly
            finally:
                tasks.discard(task)
                writer.transport.abort()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(tasks):  # stalled streams and idle keep-alive connections
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path, _ = head[0].split(" ", 2)
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                size = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(size) if size else b""
                keep_alive = await self._answer(writer, method, path, headers, raw)
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    return

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
    ) -> bool:
        """Answer one request; False when the connection must be dropped afterwards."""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        self.requests.append(Recorded(method, path, headers, body))
        behaviour = self._script.popleft() if self._script else Behaviour()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        other = self.wire.other_paths.get(path) if method == "POST" else None
        if other is not None:  # e.g. OpenAI's /v1/embeddings: JSON in, JSON out
            invalid = self.wire.check_other(path, headers, body, self.api_key)
            if invalid is not None:
                return await self._error(writer, replace(behaviour, status=invalid[0]), invalid[1])
            if behaviour.status >= 400:
                return await self._error(writer, behaviour)
            if behaviour.garbage:
                await _send(writer, 200, _GARBAGE, content_type="text/html")
                return True
            streamed = getattr(self.wire, f"{other}_frames", None)
            if streamed is not None and body.get("stream"):  # e.g. OpenAI's /v1/responses
                errors = getattr(self.wire, f"{other}_error_frame")
                return await self._stream(writer, body, behaviour, streamed, errors)
            await _send(writer, 200, orjson.dumps(getattr(self.wire, other)(body, behaviour)))
            return True
        if method != "POST" or path != self.wire.path:
            return await self._error(
                writer, replace(behaviour, status=404), f"Unknown request URL: {method} {path}"
            )
        invalid = self.wire.check(headers, body, self.api_key)
        if invalid is not None:
            return await self._error(writer, replace(behaviour, status=invalid[0]), invalid[1])
        if behaviour.status >= 400:
            return await self._error(writer, behaviour)
        if behaviour.garbage:
            await _send(writer, 200, _GARBAGE, content_type="text/html")
            return True
        if body.get("stream"):
            return await self._stream(writer, body, behaviour)
        if behaviour.stall_after is not None:
            writer.write(_head(200, {"content-type": "application/json", "content-length": "100"}))
            await writer.drain()
            await asyncio.Event().wait()  # until the server stops
        await _send(writer, 200, orjson.dumps(self.wire.completion(body, behaviour)))
        return True

    async def _error(
        self, writer: asyncio.StreamWriter, b: Behaviour, message: str | None = None
    ) -> bool:
        extra = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
        payload = orjson.dumps(self.wire.error_body(b.status, b, message))
        await _send(writer, b.status, payload, extra)
        return True

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        body: dict[str, Any],
        b: Behaviour,
        frames_of: Any = None,
        error_of: Any = None,
    ) -> bool:
        frames = (frames_of or self.wire.frames)(body, b)
        limit = min(
            x for x in (b.stall_after, b.cut_after, b.error_after, len(frames)) if x is not None
        )
        writer.write(
            _head(
                200,
                {
                    "content-type": "text/event-stream; charset=utf-8",
                    "cache-control": "no-cache",
                    "transfer-encoding": "chunked",
                },
            )
        )
        for frame in frames[:limit]:
            writer.write(_chunk(frame))
            await writer.drain()
        if b.stall_after is not None and limit == b.stall_after:
            await asyncio.Event().wait()  # until the server stops
        if b.cut_after is not None and limit == b.cut_after and b.cut_abort:
            return False  # the connection is dropped with the body unfinished
        if b.error_after is not None and limit == b.error_after:
            writer.write(_chunk((error_of or self.wire.stream_error_frame)(b)))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def _head(status: int, headers: dict[str, str]) -> bytes:
    phrase = _PHRASES.get(status) or http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}", "connection: keep-alive", "x-request-id: req_loopback"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    extra: dict[str, str] | None = None,
    *,
    content_type: str = "application/json",
) -> None:
    headers = {"content-type": content_type, "content-length": str(len(payload)), **(extra or {})}
    writer.write(_head(status, headers) + payload)
    await writer.drain()


@pytest.fixture
def openai_server() -> Iterator[LoopbackServer]:
    """A loopback OpenAI server (POST /v1/chat/completions); `.base_url` ends in /v1."""
    with LoopbackServer(OpenAIWire()) as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[LoopbackServer]:
    """A loopback Anthropic server (POST /v1/messages); `.base_url` has no /v1."""
    with LoopbackServer(AnthropicWire()) as server:
        yield server
