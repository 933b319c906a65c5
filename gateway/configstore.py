"""The process's copy of the config snapshot (gateway/snapshot.py), and how it is kept fresh.

Stale-while-revalidate: past `GATEWAY["CONFIG_TTL_S"]` a request still gets the copy it has
while one refresh runs in the background (however many requests ask at once), so neither a
TTL expiry under load nor a database outage stalls the hot path. Only a first load waits,
and if the database cannot answer it the request gets a 503.

A refresh reads the config version first (gateway/configversion.py). If no change was
published since the copy was loaded, the keys and teams are not read again, only the few
rows of providers, models and routes (a provider key rotated in its file); if changes were
published, only the keys and teams they name are read again. A full reload happens on a
first load, when the changes cannot be known (Redis unreachable or restarted, a gap in the
change log, an import) and every `GATEWAY["CONFIG_FULL_RELOAD_S"]` as a safety net for
writes that bypass the ORM's signals.

When a change is announced (by this process's own save, or by the published message
another process's save sends, see `configversion.watch`), copies loaded before the
announcement are no longer served: requests wait for the refresh it starts, a few
milliseconds for a key, so a revoked key is refused as soon as the message arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError

from gateway import configversion, runtime
from gateway.errors import ServiceUnavailable
from gateway.process import state

if TYPE_CHECKING:
    from gateway.snapshot import Snapshot

log = logging.getLogger(__name__)

NEGATIVE_CACHE_MAX = 10_000  # unknown key hashes remembered at most (oldest dropped first)
LOOKUPS_MAX = 10_000  # unknown key hashes looked up in one refresh at most


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The gateway's configuration database is unreachable; try again shortly.",
        code="config_unavailable",
        headers={"Retry-After": "5"},
    )


def load(
    base: Snapshot | None,
    scopes: set[str],
    lookups: set[str],
    full: bool,
    asked: float = math.inf,
) -> Snapshot:
    """A new snapshot: `base` with what changed read again, or everything (see the module's
    docstring for when). Runs in the database thread. `asked`: when the scopes and key
    hashes were taken; the snapshot says it was loaded then if that is earlier than its
    read (a request that arrived in between has its hash in the next refresh, not this one)."""
    from gateway import snapshot as _snapshot  # the loaders (which import this module)

    version = configversion.read()
    snap = None
    if not full and base is not None and version is not None:
        changes = configversion.changes_between(base.version, version)
        if changes is not None and "*" not in changes and "*" not in scopes:
            snap = _snapshot.refresh_snapshot(base, scopes | changes, lookups, version)
    if snap is None:
        snap = _snapshot.load_snapshot(version)
    if snap.loaded_at > asked:
        full_at = asked if snap.full_at == snap.loaded_at else snap.full_at
        snap = dataclasses.replace(snap, loaded_at=asked, full_at=full_at)
    return snap


class ConfigStore:
    """The process's snapshot, what it was told changed, and the key hashes it recently found
    unknown. A request that needs a copy newer than itself (an unknown key) waits for one
    with `fresh_snapshot`."""

    def __init__(self) -> None:
        # Re-entrant: a future that is already done runs its callback (which takes the lock)
        # inside add_done_callback, while _reload still holds it.
        self._lock = threading.RLock()
        self._generation = 0
        self._snapshot: Snapshot | None = None
        self._inflight: tuple[Future, float] | None = None  # the load running, when it began
        self._last_load = -math.inf  # when the latest load was started (any reason)
        self._unknown: dict[str, float] = {}  # key hash -> when it was found unknown
        self._pending: set[str] = set()  # scopes announced here, not yet read again
        self._lookups: set[str] = set()  # key hashes to look up in the next refresh
        self._stale_since = -math.inf  # copies loaded before this instant are not served

    @property
    def ttl(self) -> float:
        return float(settings.GATEWAY["CONFIG_TTL_S"])

    @property
    def version(self) -> tuple[str, int] | None:
        snap = self._snapshot
        return snap.version if snap is not None else None

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._snapshot = None
            self._inflight = None
            self._unknown.clear()
            self._pending.clear()
            self._lookups.clear()
            self._stale_since = -math.inf

    def changed(self, scopes=(), version: tuple[str, int] | None = None) -> None:
        """A change was announced (`scopes` as in configversion; `version`, the one it was
        published as, if known): read it now, and serve no copy loaded before this call."""
        with self._lock:
            snap = self._snapshot
            if snap is None:
                return  # the first load reads everything
            if version is not None and snap.version is not None:
                if snap.version[0] == version[0] and snap.version[1] >= version[1]:
                    return  # this copy already has it
            self._pending.update(scopes)
            self._stale_since = time.monotonic()
        self._reload()

    def _full_due(self, base: Snapshot | None, now: float) -> bool:
        every = float(settings.GATEWAY.get("CONFIG_FULL_RELOAD_S", 300))
        return base is None or now - base.full_at >= every

    def _reload(self) -> tuple[Future, float]:
        """One load at a time: the running one, or a new one; its result is stored when it
        completes."""
        with self._lock:
            if self._inflight is None:
                started = time.monotonic()
                base = self._snapshot
                pending, self._pending = self._pending, set()
                lookups, self._lookups = self._lookups, set()
                full = self._full_due(base, started)
                future = runtime.submit_db("config", load, base, pending, lookups, full, started)
                entry = self._inflight = (future, started)
                self._last_load = started
                generation = self._generation
                future.add_done_callback(lambda f: self._store(f, generation, pending))
                return entry  # _store may already have cleared _inflight
            return self._inflight

    def _store(self, future: Future, generation: int, pending: set[str]) -> None:
        again = False
        with self._lock:
            if self._inflight is not None and self._inflight[0] is future:
                self._inflight = None
            if generation != self._generation:
                return  # invalidated meanwhile: this result may predate the edit
            if future.exception() is not None:
                log.warning("config refresh failed: %r", future.exception())
                self._pending |= pending  # read them with the next refresh
                self._stale_since = -math.inf  # serve the copy we have, don't hold requests
                return
            snapshot = future.result()
            if self._snapshot is None or snapshot.loaded_at >= self._snapshot.loaded_at:
                self._snapshot = snapshot
                self._unknown.clear()  # a hash unknown to the old copy may be in this one
            again = self._stale_since > snapshot.loaded_at  # announced while it loaded
        if again:
            self._reload()

    async def _first_load(self, future: Future):
        try:
            return await asyncio.wrap_future(future)
        except DatabaseError as exc:
            raise _unavailable() from exc

    async def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is not None:
            if snap.loaded_at < self._stale_since:
                return await self._catch_up(snap)
            if time.monotonic() - snap.loaded_at <= self.ttl:
                return snap
            self._reload()
            return snap
        future, _ = self._reload()
        return await self._first_load(future)

    async def _catch_up(self, snap: Snapshot) -> Snapshot:
        """Wait for a copy loaded after the latest announced change (one refresh, shared by
        every request waiting); the copy we have if the refresh fails."""
        for _ in range(3):
            if snap.loaded_at >= self._stale_since:
                break
            future, _ = self._reload()
            try:
                await asyncio.wrap_future(future)
            except Exception:  # logged by _store; the database thread's errors are varied
                return self._snapshot or snap
            snap = self._snapshot or snap
        return snap

    def snapshot_sync(self) -> Snapshot:
        snap = self._snapshot
        now = time.monotonic()
        if snap is None or now - snap.loaded_at > self.ttl or snap.loaded_at < self._stale_since:
            with self._lock:
                pending, self._pending = self._pending, set()
            snap = self._snapshot = load(snap, pending, set(), self._full_due(snap, now))
        return snap

    async def fresh_snapshot(self, after: float, hashed: str | None = None) -> Snapshot:
        """A snapshot whose load started at or after `after` (monotonic): it holds every
        change published before then, and the key of hash `hashed` if the database has it
        (looked up with every other hash waiting, in one query). Single-flight and
        rate-limited: callers share the load that is running if it began late enough, else
        wait for the next one, and loads start at most once per `AUTH_RELOAD_INTERVAL_S`,
        however many callers wait."""
        interval = float(settings.GATEWAY["AUTH_RELOAD_INTERVAL_S"])
        if hashed is not None:
            with self._lock:
                if len(self._lookups) < LOOKUPS_MAX:
                    self._lookups.add(hashed)
        for _ in range(5):  # an old load to wait out, the rate limit, our load: 3 suffice
            snap = self._snapshot
            if snap is not None and snap.loaded_at >= after:
                return snap
            entry = self._inflight
            if entry is None:
                wait = self._last_load + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                entry = self._reload()
            future, started = entry
            try:
                result = await asyncio.wrap_future(future)
            except DatabaseError:
                raise _unavailable() from None
            if started >= after:
                return result
        return self._snapshot or await self.snapshot()

    def recently_unknown(self, hashed_secret: str) -> bool:
        """Was this hash missing from a snapshot loaded after it was first asked for, less
        than `AUTH_NEGATIVE_TTL_S` ago and since the current snapshot was stored?"""
        seen = self._unknown.get(hashed_secret)
        if seen is None:
            return False
        if time.monotonic() - seen <= float(settings.GATEWAY["AUTH_NEGATIVE_TTL_S"]):
            return True
        self._unknown.pop(hashed_secret, None)
        return False

    def remember_unknown(self, hashed_secret: str) -> None:
        with self._lock:  # `_store` clears it from the database thread
            unknown = self._unknown
            unknown.pop(hashed_secret, None)
            while len(unknown) >= NEGATIVE_CACHE_MAX:
                del unknown[next(iter(unknown))]  # the oldest first
            unknown[hashed_secret] = time.monotonic()


def store() -> ConfigStore:
    """The process's config store, built on first use into the process state."""
    process = state()
    found = process.config
    if found is None:
        found = process.config = ConfigStore()
    return found
