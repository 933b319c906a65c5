from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway import runtime
from gateway.fastpath.transport import AiohttpTransport


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A real client for the loopback servers (plain HTTP: no TLS context to build)."""
    async with httpx.AsyncClient(verify=False) as client:
        yield client


# The transport tests' clients. `client` here shadows pytest-django's test client, which no
# test in this folder uses.
@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        yield client


@pytest.fixture
async def gateway_client() -> AsyncIterator[httpx.AsyncClient]:
    """The gateway's own client of this loop (runtime.http_client), closed afterwards."""
    yield runtime.http_client()
    await runtime.close_loop_clients()
