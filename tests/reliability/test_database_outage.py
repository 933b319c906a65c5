"""The database away from the ledger writer: requests are still served from the config copy,
their records wait in Redis, and every one of them lands once the database is back.

The gateway reaches PostgreSQL through a TCP proxy the test can cut, so the outage is real
(refused connections, dropped sockets) without stopping the shared database server."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import openai
import pytest

from gateway import ledger
from gateway.models import UsageRecord
from tests.factories import make_feature, make_key, make_model, make_provider, make_team
from tests.gateway_server import free_port
from tests.processes import (
    requires_postgres,
    requires_redis_server,
    shared_database_url,
    wait_for,
)

pytestmark = [pytest.mark.slow, requires_postgres, requires_redis_server,
              pytest.mark.django_db(transaction=True)]  # fmt: skip


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of `target`; `cut()` drops every connection and
    refuses new ones until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _start(self) -> None:
        self.server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def restore(self) -> CuttableProxy:
        self._call(self._start())
        return self

    def cut(self) -> None:
        self._call(self._stop())


def test_records_wait_while_the_database_is_away_and_all_land_when_it_returns(
    own_persistent_redis, gateways
):
    team = make_team("acme")
    make_feature(team, "chatbot")
    make_model("sim-model", make_provider())
    _, secret = make_key(team)
    url = urlsplit(shared_database_url())
    proxy = CuttableProxy((url.hostname, url.port or 5432)).restore()
    proxied = urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}"))
    (gateway,) = gateways(
        1,
        redis_url=own_persistent_redis.url,
        DATABASE_URL=proxied,
        GATEWAY_LEDGER_IN_PROCESS="1",
        GATEWAY_LEDGER_FLUSH_INTERVAL_S="0.2",
        GATEWAY_CONFIG_TTL_S="0.5",
    )
    sdk = openai.OpenAI(
        base_url=gateway.base_url,
        api_key=secret,
        max_retries=0,
        default_headers={"X-Gateway-Feature": "chatbot", "X-Gateway-Cache-TTL": "0"},
    )

    def ask(n: int) -> None:
        for i in range(n):
            answer = sdk.chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": f"q{i}"}]
            )
            assert answer.choices[0].message.content

    ask(3)  # the config copy is loaded; these land at once
    wait_for(lambda: UsageRecord.objects.count() == 3, timeout=10, what="the first records")

    proxy.cut()
    time.sleep(1.0)  # past the config TTL: its refreshes now fail
    ask(10)  # served from the config copy while the database is away
    queue = own_persistent_redis.client()
    wait_for(lambda: ledger.queued(queue) == 10, timeout=10, what="10 queued records")
    assert UsageRecord.objects.count() == 3

    proxy.restore()
    wait_for(lambda: UsageRecord.objects.count() == 13, timeout=20, what="the queued records")
    assert ledger.queued(queue) == 0
    assert UsageRecord.objects.values("request_id").distinct().count() == 13
