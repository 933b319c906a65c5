"""One pipelined Redis connection per event loop, for the round trips (gateway/roundtrip.py).

Redis answers a connection's commands in the order they were sent, so every round trip of a
worker can share one connection: each writes its commands and waits for as many replies as
it sent, matched in order as they arrive. There is no pool to check a connection out of,
no per-exchange health check, and the replies are parsed by hiredis as the bytes arrive
(`data_received`), not by a coroutine per reply. A sequential two-command round trip took
~170 us of CPU on a pooled redis-py connection and ~100 us this way, most of it the system
calls both pay.

What a connection failure means is unchanged from redis-py's pipelines: every round trip
waiting on the connection gets a `ConnectionError` (or `TimeoutError` when a reply takes
longer than the socket timeout, after which the connection cannot be trusted to match
replies and is closed), and `execute` sends a round trip once more on a new connection, as
redis-py retries its own. The budget scripts and the ledger are idempotent per request id,
so a command that ran before its reply was lost is safe to run again.

Used for clients of plain TCP connections (`redis://`); TLS, Unix sockets and the embedded
stand-in keep redis-py's pooled connections (`roundtrip.execute`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Multiplexed"]


class _Waiter:
    __slots__ = ("future", "count", "replies")

    def __init__(self, future: asyncio.Future, count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        # Error replies become redis-py's own exception classes (NoScriptError, ...).
        self.parser = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error
        )
        self.waiting: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        waiting, parser = self.waiting, self.parser
        while waiting:
            head = waiting[0]
            while len(head.replies) < head.count:
                reply = parser.gets()
                if reply is False:
                    return
                head.replies.append(reply)
            waiting.popleft()
            if not head.future.done():
                head.future.set_result(head.replies)
        if parser.gets() is not False:  # a reply nobody asked for: replies no longer match
            self.fail(InvalidResponse("Redis sent a reply no command was waiting for"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by Redis'}"))

    def fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def send(self, commands: list[tuple[Any, ...]]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        transport = self.transport
        assert transport is not None, "send() before the connection was made"
        if self.lost is None and transport.is_closing():  # closed, not yet told
            self.fail(RedisConnectionError("Connection to Redis closed"))
        if self.lost is not None:
            future.set_exception(self.lost)
            return future
        self.waiting.append(_Waiter(future, len(commands)))
        transport.write(b"".join(map(hiredis.pack_command, commands)))
        return future


class Multiplexed:
    """A loop's connection to one Redis server and database, opened on first use and again
    after a failure (gateway.runtime keeps one per redis-py client's address)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
        retries: int = 1,
    ) -> None:
        self.address = (host, port)
        self.db, self.username, self.password = db, username, password
        self.timeout = timeout
        self.retries = retries
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write; their replies, an error reply as its exception in
        its place. A failed connection is retried `retries` times on a new one."""
        attempt = 0
        while True:
            try:
                return await self._exchange(commands)
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                if attempt >= self.retries:
                    if isinstance(error, OSError):  # refused, unreachable, connect timeout
                        host, port = self.address
                        reason = str(error) or type(error).__name__
                        raise RedisConnectionError(
                            f"Error connecting to Redis at {host}:{port}: {reason}"
                        ) from error
                    raise
                attempt += 1

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        future = protocol.send(commands)  # only this round trip awaits it: no shield needed
        try:
            async with asyncio.timeout(self.timeout):
                replies = await future
        except TimeoutError:
            # A late reply would be taken for the next command's: nothing on this
            # connection can be trusted any more.
            protocol.fail(RedisTimeoutError("Timeout reading from Redis"))
            raise RedisTimeoutError("Timeout reading from Redis") from None
        return replies

    async def _connect(self) -> _Protocol:
        """One connect at a time: round trips arriving meanwhile wait for the same one."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            _, protocol = await loop.create_connection(_Protocol, *self.address)
            handshake: list[tuple[Any, ...]] = []
            if self.password:
                handshake.append(("AUTH", *filter(None, (self.username, self.password))))
            if self.db:
                handshake.append(("SELECT", self.db))
            if handshake:
                for reply in await protocol.send(handshake):
                    if isinstance(reply, Exception):
                        protocol.fail(reply)
                        raise reply
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.fail(RedisConnectionError("The connection was closed"))
