"""Helpers for the budget tests: running async services from sync tests, snapshots, a
loopback webhook receiver."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.conf import settings
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from gateway import runtime
from gateway.snapshot import TeamSnap, store


def arun(fn, /, *args, **kwargs):
    """Run `await fn(*args, **kwargs)` from a sync test, with `redis=` the loop's client.

    Under async_to_sync, sync_to_async calls (the eager Celery alert task) run back on the
    test's thread, so they see the test's database transaction.
    """

    async def main():
        try:
            return await fn(*args, redis=runtime.aredis(), **kwargs)
        finally:
            await runtime.close_loop_clients()

    return async_to_sync(main)()


def pin_clock(now):
    """An autouse fixture that sets the process's wall clock to `now` (ticking on from
    there) for each test of the module that assigns it: `_clock = pin_clock(NOW)`.

    A test with a fixed instant pins the clock the code reads it from, not only the `now=`
    it passes: TTLs are spans from the process clock, and the embedded Redis stand-in reads
    TIME from it. A real Redis keeps its own clock, which the scripts only use for spans, so
    a test gives the same answer on any date."""

    @pytest.fixture(autouse=True)
    def _pinned_clock():
        with time_machine.travel(now, tick=True):
            yield

    return _pinned_clock


def wide_client():
    """An asyncio client allowing 512 connections (for bursts of 200 concurrent calls), on
    the same Redis as gateway.runtime (the real one, or the in-process stand-in)."""
    if settings.REDIS_URL:
        return Redis.from_url(settings.REDIS_URL, max_connections=512)
    return FakeAsyncRedis(host="embedded", port=6379, lua_modules=set(), max_connections=512)


def team_snap(team_id: int) -> TeamSnap:
    store().invalidate()
    return store().snapshot_sync().teams[team_id]


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records JSON bodies and answers `status`."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []  # answers to give, in order; 200 once exhausted
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def webhook():
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(autouse=True)
def _plain_http(settings):
    # Production settings (real services) redirect plain HTTP to HTTPS; the test client speaks
    # plain HTTP.
    settings.SECURE_SSL_REDIRECT = False
