from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A real client for the loopback servers (plain HTTP: no TLS context to build)."""
    async with httpx.AsyncClient(verify=False) as client:
        yield client
