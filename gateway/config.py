"""The hot path's in-process copy of what admins edit: teams, features, budgets, providers,
models, routes and keys.

The hot path never queries the database on a steady state: it reads an immutable `Snapshot`
loaded in one transaction of a few queries and refreshed in the background once older than
`GATEWAY["CONFIG_TTL_S"]` seconds (5 by default). That TTL plus one refresh is the bound on
how long an edit (a revoked key, a new price) takes to reach every process.

Keys are part of the snapshot (by the SHA-256 of their secret), so a key the snapshot does
not hold costs no query of its own: the caller asks for a snapshot loaded after its request
arrived (`fresh_snapshot`), and every such request shares one reload, at most one per
`GATEWAY["AUTH_RELOAD_INTERVAL_S"]`. A key created in another process therefore works on
its first request here, and a flood of random keys costs at most one reload per interval,
not a query per key. Hashes still unknown after such a reload are remembered for
`GATEWAY["AUTH_NEGATIVE_TTL_S"]` (bounded in number, forgotten whenever a new snapshot is
stored) and refused without waiting for another reload (gateway/auth.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from gateway import ceiling, keyvars, runtime
from gateway.errors import ServiceUnavailable
from gateway.money import Prices, usd_to_units
from gateway.providers.base import ProviderConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetSnap:
    id: int
    team_id: int
    feature_id: int | None  # None: a team budget, covering every feature
    daily_units: int | None
    monthly_units: int | None
    thresholds: tuple[int, ...]
    hard: bool
    timezone: str  # the team's; windows start at its midnight
    reservation: str = "cap"  # "cap" or "strict" (budgets.models.Reservation)

    def limit_units(self, window: str) -> int | None:
        return self.daily_units if window == "daily" else self.monthly_units


@dataclass(frozen=True, slots=True)
class FeatureSnap:
    id: int
    name: str
    default_cache_ttl: int
    output_cap: int | None = None  # the admin's override, else the learned cap, else None
    cache_sampled: bool = True  # cache answers sampled at temperature > 0 (or unset)


@dataclass(frozen=True, slots=True)
class TeamSnap:
    id: int
    name: str
    timezone: str
    cache_scope: str
    budget_fail_open: bool
    store_content: bool
    rpm_limit: int | None
    tpm_limit: int | None
    features: dict[str, FeatureSnap]
    budgets: tuple[BudgetSnap, ...]
    fallback_ceiling: Decimal | None = None  # gateway/ceiling.py

    def budgets_for(self, feature: FeatureSnap | None) -> list[BudgetSnap]:
        """Every budget that covers a request of this team and feature."""
        fid = feature.id if feature else None
        return [b for b in self.budgets if b.feature_id is None or b.feature_id == fid]


@dataclass(frozen=True, slots=True)
class ModelSnap:
    id: int
    name: str
    upstream_id: str
    provider: ProviderConfig
    prices: Prices
    context_window: int
    max_output_tokens: int
    fallbacks: tuple[str, ...]
    # Parameters dropped on purpose for this model (LanguageModel.drop_params).
    drop_params: frozenset[str] = frozenset()
    mode: str = "chat"  # LanguageModel.mode: the endpoint it serves (chat | embedding)
    dimensions: int | None = None  # embedding models: the vector's length, if known

    @property
    def chain_names(self) -> tuple[str, ...]:
        """The chain a request naming this model follows: itself, then its fallbacks."""
        return (self.name, *(name for name in self.fallbacks if name != self.name))


@dataclass(frozen=True, slots=True)
class RouteSnap:
    name: str
    priority: str  # "" matches any
    max_prompt_tokens: int | None
    max_output_tokens: int | None
    chain: tuple[str, ...]
    fallback_ceiling: Decimal | None = None  # None: the team's
    allow_above_ceiling: bool = False


@dataclass(frozen=True, slots=True)
class KeySnap:
    id: int
    prefix: str
    team_id: int
    feature_id: int | None
    expires_at: datetime | None
    revoked: bool
    rpm_limit: int | None
    tpm_limit: int | None
    output_cap: int | None = None

    @property
    def active(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())


@dataclass(frozen=True, slots=True)
class Snapshot:
    teams: dict[int, TeamSnap]
    models: dict[str, ModelSnap]  # enabled models of enabled providers, by client-facing name
    routes: tuple[RouteSnap, ...]
    keys: dict[str, KeySnap] = field(default_factory=dict)  # by SHA-256 of the secret
    loaded_at: float = field(default_factory=time.monotonic)  # when its load started
    # (ceiling, chain's model names) -> {fallback above that ceiling: why}; gateway/ceiling.py.
    # Computed whenever a snapshot is built (in the background), never per request.
    ceiling_skips: dict[tuple[Decimal, tuple[str, ...]], dict[str, str]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "ceiling_skips", ceiling.table(self.teams, self.models, self.routes)
        )


def load_snapshot() -> Snapshot:
    """Read everything the hot path needs from the database: a handful of queries in one
    transaction. `loaded_at` is when the load started, so a snapshot sees every row that
    was committed before that instant."""
    started = time.monotonic()
    with transaction.atomic():
        return _load_snapshot(started)


def _load_snapshot(started: float) -> Snapshot:
    from budgets.models import Budget
    from gateway.models import ApiKey, Feature, LanguageModel, RouteRule, Team

    # Keys first: a key's team and feature were committed before it, so every key read here
    # finds them in the queries below (each statement sees what was committed when it began).
    keys = {
        row[0]: KeySnap(
            id=row[1],
            prefix=row[2],
            team_id=row[3],
            feature_id=row[4],
            expires_at=row[5],
            revoked=row[6] is not None,
            rpm_limit=row[7],
            tpm_limit=row[8],
            output_cap=row[9],
        )
        for row in ApiKey.objects.order_by().values_list(
            "hashed_secret",
            "id",
            "prefix",
            "team_id",
            "feature_id",
            "expires_at",
            "revoked_at",
            "rpm_limit",
            "tpm_limit",
            "output_cap",
        )
    }
    features: dict[int, dict[str, FeatureSnap]] = {}
    for f in Feature.objects.all():
        features.setdefault(f.team_id, {})[f.name] = FeatureSnap(
            f.id,
            f.name,
            f.default_cache_ttl,
            f.output_cap or f.learned_output_cap,
            f.cache_sampled,
        )
    teams_tz = dict(Team.objects.values_list("id", "timezone"))
    budgets: dict[int, list[BudgetSnap]] = {}
    for b in Budget.objects.filter(enabled=True):
        budgets.setdefault(b.team_id, []).append(
            BudgetSnap(
                id=b.id,
                team_id=b.team_id,
                feature_id=b.feature_id if b.scope == Budget.Scope.FEATURE else None,
                daily_units=usd_to_units(b.daily_limit_usd)
                if b.daily_limit_usd is not None
                else None,
                monthly_units=usd_to_units(b.monthly_limit_usd)
                if b.monthly_limit_usd is not None
                else None,
                thresholds=tuple(sorted(b.alert_thresholds or ())),
                hard=b.hard,
                timezone=teams_tz.get(b.team_id, "UTC"),
                reservation=b.reservation,
            )
        )
    teams = {
        t.id: TeamSnap(
            id=t.id,
            name=t.name,
            timezone=t.timezone,
            cache_scope=t.cache_scope,
            budget_fail_open=t.budget_fail_open,
            store_content=t.store_content,
            rpm_limit=t.rpm_limit,
            tpm_limit=t.tpm_limit,
            features=features.get(t.id, {}),
            budgets=tuple(budgets.get(t.id, ())),
            fallback_ceiling=t.fallback_ceiling,
        )
        for t in Team.objects.all()
    }
    models: dict[str, ModelSnap] = {}
    qs = (
        LanguageModel.objects.filter(enabled=True, provider__enabled=True)
        .select_related("provider")
        .prefetch_related("fallback_links__target")
    )
    for m in qs:
        p = m.provider
        # A refused name (a row from before the allowlist, or written by SQL) is never read:
        # the provider's calls fail instead (ProviderAdapter._send).
        api_key, key_error = keyvars.provider_key(p.name, p.api_key_env)
        models[m.name] = ModelSnap(
            id=m.id,
            name=m.name,
            upstream_id=m.upstream_id,
            provider=ProviderConfig(
                name=p.name,
                kind=p.kind,
                base_url=p.base_url,
                api_key=api_key,
                key_error=key_error,
                connect_timeout=p.connect_timeout,
                read_timeout=p.read_timeout,
                options=dict(p.options or {}),
            ),
            prices=Prices(
                m.input_per_mtok, m.output_per_mtok, m.cached_input_per_mtok, m.cache_write_per_mtok
            ),
            context_window=m.context_window,
            max_output_tokens=m.max_output_tokens,
            fallbacks=tuple(link.target.name for link in m.fallback_links.all()),
            drop_params=frozenset(m.drop_params or ()),
            mode=m.mode,
            dimensions=m.dimensions,
        )
    routes = tuple(
        RouteSnap(
            name=r.name,
            priority=r.priority,
            max_prompt_tokens=r.max_prompt_tokens,
            max_output_tokens=r.max_output_tokens,
            chain=tuple(s.model.name for s in r.steps.all()),
            fallback_ceiling=r.fallback_ceiling,
            allow_above_ceiling=r.allow_above_ceiling,
        )
        for r in RouteRule.objects.filter(enabled=True).prefetch_related("steps__model")
    )
    return Snapshot(teams=teams, models=models, routes=routes, keys=keys, loaded_at=started)


NEGATIVE_CACHE_MAX = 10_000  # unknown key hashes remembered at most (oldest dropped first)


class ConfigStore:
    """The process's snapshot, and the key hashes it recently found unknown.

    Stale-while-revalidate: past the TTL a request still gets the copy it has while one
    refresh runs in the background (however many requests ask at once), so neither a TTL
    expiry under load nor a database outage stalls the hot path. Only a first load waits,
    and if the database cannot answer it the request gets a 503. A request that needs a
    copy newer than itself (an unknown key) waits for one with `fresh_snapshot`.
    """

    def __init__(self) -> None:
        # Re-entrant: a future that is already done runs its callback (which takes the lock)
        # inside add_done_callback, while _reload still holds it.
        self._lock = threading.RLock()
        self._generation = 0
        self._snapshot: Snapshot | None = None
        self._inflight: tuple[Future, float] | None = None  # the load running, when it began
        self._last_load = -math.inf  # when the latest load was started (any reason)
        self._unknown: dict[str, float] = {}  # key hash -> when it was found unknown

    @property
    def ttl(self) -> float:
        return float(settings.GATEWAY["CONFIG_TTL_S"])

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._snapshot = None
            self._inflight = None
            self._unknown.clear()

    def _reload(self) -> tuple[Future, float]:
        """One load at a time: the running one, or a new one; its result is stored when it
        completes."""
        with self._lock:
            entry = self._inflight
            if entry is None:
                started = time.monotonic()
                future = runtime.submit_db("config", load_snapshot)
                entry = self._inflight = (future, started)
                self._last_load = started
                generation = self._generation
                # A load already done runs `_store` right here (the lock is re-entrant),
                # which clears `_inflight`: hence `entry`, not `self._inflight`, is returned.
                future.add_done_callback(lambda f: self._store(f, generation))
            return entry

    def _store(self, future: Future, generation: int) -> None:
        with self._lock:
            if self._inflight is not None and self._inflight[0] is future:
                self._inflight = None
            if generation != self._generation:
                return  # invalidated meanwhile: this result may predate the edit
            if future.exception() is not None:
                log.warning("config refresh failed: %r", future.exception())
                return
            snapshot = future.result()
            if self._snapshot is None or snapshot.loaded_at >= self._snapshot.loaded_at:
                self._snapshot = snapshot
                self._unknown.clear()  # a hash unknown to the old copy may be in this one

    async def _first_load(self, future: Future):
        try:
            return await asyncio.wrap_future(future)
        except DatabaseError as exc:
            raise ServiceUnavailable(
                "The gateway's configuration database is unreachable; try again shortly.",
                code="config_unavailable",
                headers={"Retry-After": "5"},
            ) from exc

    async def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.loaded_at <= self.ttl:
            return snap
        future, _ = self._reload()
        if snap is not None:
            return snap
        return await self._first_load(future)

    def snapshot_sync(self) -> Snapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.loaded_at > self.ttl:
            snap = self._snapshot = load_snapshot()
        return snap

    async def fresh_snapshot(self, after: float) -> Snapshot:
        """A snapshot whose load started at or after `after` (monotonic): it holds every
        row committed before then. Single-flight and rate-limited: callers share the load
        that is running if it began late enough, else wait for the next one, and loads
        start at most once per `AUTH_RELOAD_INTERVAL_S`, however many callers wait."""
        interval = float(settings.GATEWAY["AUTH_RELOAD_INTERVAL_S"])
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
                raise ServiceUnavailable(
                    "The gateway's configuration database is unreachable; try again shortly.",
                    code="config_unavailable",
                    headers={"Retry-After": "5"},
                ) from None
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


@cache
def store() -> ConfigStore:
    return ConfigStore()
