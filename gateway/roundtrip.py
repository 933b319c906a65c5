"""Several Redis commands in one round trip.

A request used to make seven sequential Redis round trips. The pipeline now queues what it
needs before the upstream call (rate limits, cache lookup, circuit state) and after it
(settle, cache store) on a `RoundTrip`, and sends each group as one non-transactional
pipeline. Each command still runs on its own: a script keeps its own atomicity, nothing
is atomic across commands.

Scripts go by their SHA1 (EVALSHA). When Redis does not know one (it restarted or its
scripts were flushed), that command alone is loaded and run again; the others already ran
and are not repeated.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

from redis.exceptions import NoScriptError


@cache
def sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class RoundTrip:
    def __init__(self, redis) -> None:
        self.redis = redis
        self._calls: list[tuple[str, tuple, dict, str | None]] = []

    def add(self, command: str, *args: Any, **kwargs: Any) -> int:
        """Queue `redis.<command>(*args, **kwargs)`; returns the index of its reply."""
        self._calls.append((command, args, kwargs, None))
        return len(self._calls) - 1

    def script(self, source: str, keys: list[str], args: list[Any]) -> int:
        """Queue a Lua script; returns the index of its reply."""
        self._calls.append(("evalsha", (sha(source), len(keys), *keys, *args), {}, source))
        return len(self._calls) - 1

    async def send(self) -> list[Any]:
        """Send everything queued; the replies in queue order. The first command that failed
        raises its error (a connection error fails them all)."""
        if not self._calls:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for command, args, kwargs, _ in self._calls:
            getattr(pipe, command)(*args, **kwargs)
        replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                _, args, _, source = self._calls[i]
                await self.redis.script_load(source)
                replies[i] = await self.redis.evalsha(*args)
            elif isinstance(reply, Exception):
                raise reply
        return replies
