"""The gateway itself on a real loopback port (uvicorn in a background thread), so the
official `openai` SDK talks to it over TCP exactly as a service would.

Tests that use it need `transactional_db`: the server reads the database from its own
threads. The ledger drainer does not run inside the server; tests call `ledger.drain()`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from gateway import runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayServer:
    def __init__(self) -> None:
        from gatewaysite.asgi import http_application  # production's: API paths, then the site

        self.port = free_port()
        config = uvicorn.Config(
            http_application,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            loop="asyncio",
            http="h11",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="gateway-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        finally:
            await runtime.close_loop_clients()

    def start(self) -> GatewayServer:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.02)
        raise RuntimeError("the gateway server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        runtime.close_db_threads()


@dataclass
class Tenant:
    """A team with one feature and a key, ready to call the gateway."""

    team: object
    feature: object
    key: object
    secret: str


@pytest.fixture
def gateway_server(transactional_db) -> Iterator[GatewayServer]:
    server = GatewayServer().start()
    try:
        yield server
    finally:
        server.stop()
