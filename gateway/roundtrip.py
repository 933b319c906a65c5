"""Several Redis commands in one round trip, and concurrent requests' round trips in one.

A request used to make seven sequential Redis round trips. The pipeline now queues what it
needs before the upstream call (rate limits, cache lookup, circuit state) and after it
(settle, cache store, ledger record) on a `RoundTrip`, and sends each group as one
non-transactional pipeline. Each command still runs on its own: a script keeps its own
atomicity, nothing is atomic across commands.

Round trips sent in the same turn of the event loop, by as many requests as are in flight,
share one pipeline on one connection: under load a worker pays one socket write and one
read for a whole wave of requests, not one each, and a burst of requests needs a few
pooled connections, not one per request. Each `send()` still gets only its own replies,
and a request that is cancelled while it waits does not cancel the others' commands.

Scripts go by their SHA1 (EVALSHA). When Redis does not know one (it restarted or its
scripts were flushed), that command alone is loaded and run again; the others already ran
and are not repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from redis.exceptions import NoScriptError

from gateway import runtime

log = logging.getLogger(__name__)
MAX_SHARED = 512  # commands in one shared pipeline; a larger wave opens the next one


@cache
def sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class RoundTrip:
    def __init__(self, redis) -> None:
        self.redis = redis
        self._calls: list[tuple[str, tuple, dict, str | None]] = []
        self._fallbacks: list[tuple[int, Callable[[], None]]] = []

    def add(self, command: str, *args: Any, **kwargs: Any) -> int:
        """Queue `redis.<command>(*args, **kwargs)`; returns the index of its reply."""
        self._calls.append((command, args, kwargs, None))
        return len(self._calls) - 1

    def script(self, source: str, keys: list[str], args: list[Any]) -> int:
        """Queue a Lua script; returns the index of its reply."""
        self._calls.append(("evalsha", (sha(source), len(keys), *keys, *args), {}, source))
        return len(self._calls) - 1

    def if_not_done(self, index: int, fallback: Callable[[], None]) -> None:
        """Call `fallback()` if the command at `index` does not run: Redis unreachable or the
        command refused. It is called whatever becomes of the request that sent the round
        trip, even one cancelled while it waited (what must not be lost uses this). For
        plain commands only: a script Redis does not know is run again by `send()`, after
        its fallback would already have run."""
        self._fallbacks.append((index, fallback))

    async def send(self) -> list[Any]:
        """Send everything queued; the replies in queue order. The first command that failed
        raises its error (a connection error fails them all)."""
        if not self._calls:
            return []
        replies = await _share(self.redis, self._calls, self._fallbacks)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                _, args, _, source = self._calls[i]
                await self.redis.script_load(source)
                replies[i] = await self.redis.evalsha(*args)
            elif isinstance(reply, Exception):
                raise reply
        return replies


@dataclass
class _Shared:
    """The pipeline the round trips of one loop turn join."""

    redis: Any
    calls: list[tuple[str, tuple, dict, str | None]] = field(default_factory=list)
    waiters: list[tuple[int, int, asyncio.Future]] = field(default_factory=list)
    fallbacks: list[tuple[int, Callable[[], None]]] = field(default_factory=list)


_open: dict[tuple[asyncio.AbstractEventLoop, int], _Shared] = {}


async def _share(redis, calls: list, fallbacks: list) -> list[Any]:
    loop = asyncio.get_running_loop()
    key = (loop, id(redis))
    shared = _open.get(key)
    if shared is None or len(shared.calls) >= MAX_SHARED:
        shared = _open[key] = _Shared(redis)
        runtime.spawn(_send_shared(key, shared))  # runs once this turn's requests have joined
    replies = loop.create_future()
    start = len(shared.calls)
    shared.waiters.append((start, len(calls), replies))
    shared.fallbacks.extend((start + index, fallback) for index, fallback in fallbacks)
    shared.calls.extend(calls)
    return await asyncio.shield(replies)  # a cancelled request does not cancel the others'


async def _send_shared(key, shared: _Shared) -> None:
    if _open.get(key) is shared:
        del _open[key]  # round trips from now on start the next pipeline
    pipe = shared.redis.pipeline(transaction=False)
    for command, args, kwargs, _ in shared.calls:
        getattr(pipe, command)(*args, **kwargs)
    try:
        replies = await pipe.execute(raise_on_error=False)
    except asyncio.CancelledError:  # the loop is shutting down
        _fall_back(shared.fallbacks)
        for _, _, waiter in shared.waiters:
            waiter.cancel()
        raise
    except Exception as exc:  # Redis unreachable: every round trip in it fails alike
        _fall_back(shared.fallbacks)
        for _, _, waiter in shared.waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        return
    _fall_back((i, fb) for i, fb in shared.fallbacks if isinstance(replies[i], Exception))
    for start, count, waiter in shared.waiters:
        if not waiter.done():
            waiter.set_result(replies[start : start + count])


def _fall_back(fallbacks) -> None:
    for _, fallback in fallbacks:
        try:
            fallback()
        except Exception:
            log.exception("a round trip's fallback failed")
