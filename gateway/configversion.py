"""The config version: one counter in Redis, bumped after every committed change to what the
hot path's snapshot holds (gateway/snapshot.py), with a log of what each bump changed and a
message on a pub/sub channel.

- Writers: every ORM save and delete of a team, feature, key, budget, provider, model,
  fallback, route or route step announces itself through Django's signals (`connect`);
  writes that bypass them (`QuerySet.update`, `bulk_create`, `importconfig`) call `changed`.
  The bump runs once the transaction commits, so a process that hears of it reads the change.
- Every process: `watch` (started per worker by gateway/lifespan.py) subscribes to the
  channel and tells the store at once; it also reads the version every `CONFIG_TTL_S` as a
  safety net for a missed message, and reconnects after a Redis restart.
- The store reads the version before each refresh and, with the log, reads again only the
  keys and teams that changed (gateway/configstore.py).

The scopes a change names: "k:<key id>", "t:<team id>", "t:*" (every team), "m" (providers,
models, routes: read on every refresh anyway) and "*" (everything).

Redis keys: the version, its epoch (a new random token whenever the counter starts again,
e.g. after a Redis restart without persistence: a process that kept an older epoch reloads
everything) and the change log, a sorted set of the last `CHANGES_KEPT` bumps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import cast

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from redis.exceptions import RedisError

from gateway import runtime
from gateway.redisurl import shared_key

log = logging.getLogger(__name__)

VERSION_KEY = shared_key("config:version")
EPOCH_KEY = shared_key("config:epoch")
CHANGES_KEY = shared_key("config:changes")
CHANNEL = "gw:config:changed"
CHANGES_KEPT = 1000

# KEYS: version, epoch, changes. ARGV: a new epoch, the scopes, how many bumps to keep, the
# channel. Publishes and returns "<epoch> <version>".
BUMP = """
local v = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if v == 1 or not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
redis.call('ZADD', KEYS[3], v, v .. '|' .. ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[3]) + 1))
local token = epoch .. ' ' .. v
redis.call('PUBLISH', ARGV[4], token)
return token
"""


def parse(token: bytes | str) -> tuple[str, int] | None:
    """ "<epoch> <version>" as a pair; None if it is not one."""
    text = token.decode() if isinstance(token, bytes) else token
    epoch, _, number = text.partition(" ")
    return (epoch, int(number)) if number.isdigit() else None


def _pair(epoch: bytes | str | None, number: bytes | str | None) -> tuple[str, int]:
    text = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
    return (text, int(number or 0))


def read() -> tuple[str, int] | None:
    """The current (epoch, version); None when Redis cannot be read."""
    try:
        epoch, number = runtime.sync_redis().mget(EPOCH_KEY, VERSION_KEY)
    except (RedisError, OSError) as exc:
        log.warning("config version unreadable, reloading everything: %r", exc)
        return None
    return _pair(epoch, number)


def changes_between(old: tuple[str, int] | None, new: tuple[str, int]) -> set[str] | None:
    """The scopes changed after `old` up to `new`; None when they cannot be known (another
    epoch, or a gap in the log): then everything is read again."""
    if old is None or old[0] != new[0] or new[1] < old[1]:
        return None
    if new[1] == old[1]:
        return set()
    try:
        rows = runtime.sync_redis().zrangebyscore(CHANGES_KEY, old[1] + 1, new[1])
    except (RedisError, OSError):
        return None
    seen: set[str] = set()
    scopes: set[str] = set()
    for row in rows:
        number, _, named = cast(bytes, row).decode().partition("|")
        seen.add(number)
        scopes.update(s for s in named.split(",") if s)
    return scopes if len(seen) == new[1] - old[1] else None


def publish(scopes: set[str]) -> tuple[str, int] | None:
    """Bump the version with `scopes` in its log entry and tell every process. If Redis is
    unreachable the other processes learn of it at their next full reload (they reload
    everything while they cannot read the version)."""
    from gateway.snapshot import store

    version = None
    try:
        token = runtime.sync_redis().eval(
            BUMP,
            3,
            VERSION_KEY,
            EPOCH_KEY,
            CHANGES_KEY,
            uuid.uuid4().hex,
            ",".join(sorted(scopes)),
            CHANGES_KEPT,
            CHANNEL,
        )
        version = parse(token)
    except (RedisError, OSError) as exc:
        log.warning("config change not published, Redis is unreachable: %r", exc)
    store().changed(scopes)
    return version


def changed(*scopes: str) -> None:
    """Announce a change: to this process at once, and to every process (the version bump)
    once the current transaction commits (at once outside one)."""
    from gateway.snapshot import store

    named = set(scopes) or {"*"}
    store().changed(named)
    transaction.on_commit(lambda: publish(named))


# --- Signals: every ORM save and delete of what the snapshot holds ---------------------------


def _scopes(instance) -> tuple[str, ...]:
    from budgets.models import Budget
    from gateway.models import ApiKey, Feature, Team

    if isinstance(instance, ApiKey):
        return (f"k:{instance.pk}",)
    if isinstance(instance, Team):
        return (f"t:{instance.pk}",)
    if isinstance(instance, Feature | Budget):
        return (f"t:{instance.team_id}",)
    return ("m",)


def _on_change(sender, instance, **kwargs) -> None:
    if kwargs.get("raw"):
        return  # loaddata: the command's caller announces it
    changed(*_scopes(instance))


def connect() -> None:
    from budgets.models import Budget
    from gateway.models import (
        ApiKey,
        Fallback,
        Feature,
        LanguageModel,
        Provider,
        RouteRule,
        RouteStep,
        Team,
    )

    for model in (
        Team,
        Feature,
        ApiKey,
        Budget,
        Provider,
        LanguageModel,
        Fallback,
        RouteRule,
        RouteStep,
    ):
        uid = f"config-version-{model._meta.label}"
        post_save.connect(_on_change, sender=model, dispatch_uid=uid + "-save")
        post_delete.connect(_on_change, sender=model, dispatch_uid=uid + "-delete")


# --- Every worker: hear of changes at once ----------------------------------------------------


async def watch(stop: asyncio.Event) -> None:
    """Until `stop`: tell the store of every published change as it arrives, and compare the
    version every `CONFIG_TTL_S` (a message missed while Redis was away, or lost). Redis
    errors are logged once per outage and retried with a growing pause (at most 5 s)."""
    from gateway.snapshot import store

    pause, down_since = 0.5, -math.inf
    while not stop.is_set():
        client = runtime.async_from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
            if down_since > -math.inf:
                log.info("config messages heard again")
            pause, down_since = 0.5, -math.inf
            store().changed()  # whatever was published while we were not listening
            next_poll = time.monotonic() + float(settings.GATEWAY["CONFIG_TTL_S"])
            while not stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    store().changed(version=parse(message["data"]))
                if time.monotonic() >= next_poll:
                    current = _pair(*await client.mget(EPOCH_KEY, VERSION_KEY))
                    if current != store().version:
                        store().changed(version=current)
                    next_poll = time.monotonic() + float(settings.GATEWAY["CONFIG_TTL_S"])
        except (RedisError, OSError) as exc:
            if down_since == -math.inf:
                down_since = time.monotonic()
                log.warning("config messages not heard, Redis is unreachable: %r", exc)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
            pause = min(pause * 2, 5.0)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except (RedisError, OSError):
                pass
