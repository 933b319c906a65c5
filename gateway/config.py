"""The hot path's in-process copy of what admins edit: teams, features, budgets, providers,
models, routes and keys.

The hot path never queries the database on a steady state: it reads an immutable `Snapshot`
loaded in a few queries and refreshed in the background once older than
`GATEWAY["CONFIG_TTL_S"]` seconds (5 by default). That TTL plus one refresh is the bound on
how long an edit (a revoked key, a new price) takes to reach every process. Keys are cached
one by one the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from gateway import runtime
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

    def limit_units(self, window: str) -> int | None:
        return self.daily_units if window == "daily" else self.monthly_units


@dataclass(frozen=True, slots=True)
class FeatureSnap:
    id: int
    name: str
    default_cache_ttl: int


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


@dataclass(frozen=True, slots=True)
class RouteSnap:
    name: str
    priority: str  # "" matches any
    max_prompt_tokens: int | None
    max_output_tokens: int | None
    chain: tuple[str, ...]


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

    @property
    def active(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())


@dataclass(frozen=True, slots=True)
class Snapshot:
    teams: dict[int, TeamSnap]
    models: dict[str, ModelSnap]  # enabled models of enabled providers, by client-facing name
    routes: tuple[RouteSnap, ...]
    loaded_at: float = field(default_factory=time.monotonic)


def provider_secret(env_name: str) -> str:
    """A provider's key: the content of the file named by `<env_name>_FILE` when that is set
    (read at each snapshot load, so a key rotated in the file reaches every process within
    GATEWAY["CONFIG_TTL_S"] plus one refresh, with no restart), else `<env_name>` itself."""
    if not env_name:
        return ""
    path = os.environ.get(f"{env_name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as secret:
                return secret.read().strip()
        except OSError as exc:  # keep serving: the variable, if set, is the fallback
            log.warning("cannot read %s_FILE (%s): %s", env_name, path, type(exc).__name__)
    return os.environ.get(env_name, "")


def load_snapshot() -> Snapshot:
    """Read everything the hot path needs from the database (a handful of queries)."""
    from budgets.models import Budget
    from gateway.models import Feature, LanguageModel, RouteRule, Team

    features: dict[int, dict[str, FeatureSnap]] = {}
    for f in Feature.objects.all():
        features.setdefault(f.team_id, {})[f.name] = FeatureSnap(f.id, f.name, f.default_cache_ttl)
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
        models[m.name] = ModelSnap(
            id=m.id,
            name=m.name,
            upstream_id=m.upstream_id,
            provider=ProviderConfig(
                name=p.name,
                kind=p.kind,
                base_url=p.base_url,
                api_key=provider_secret(p.api_key_env),
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
        )
    routes = tuple(
        RouteSnap(
            name=r.name,
            priority=r.priority,
            max_prompt_tokens=r.max_prompt_tokens,
            max_output_tokens=r.max_output_tokens,
            chain=tuple(s.model.name for s in r.steps.all()),
        )
        for r in RouteRule.objects.filter(enabled=True).prefetch_related("steps__model")
    )
    return Snapshot(teams=teams, models=models, routes=routes)


def load_key(hashed_secret: str) -> KeySnap | None:
    from gateway.models import ApiKey

    k = ApiKey.objects.filter(hashed_secret=hashed_secret).first()
    if k is None:
        return None
    return KeySnap(
        id=k.id,
        prefix=k.prefix,
        team_id=k.team_id,
        feature_id=k.feature_id,
        expires_at=k.expires_at,
        revoked=k.revoked_at is not None,
        rpm_limit=k.rpm_limit,
        tpm_limit=k.tpm_limit,
    )


class ConfigStore:
    """The process's snapshot and key cache.

    Stale-while-revalidate: past the TTL a request still gets the copy it has while one
    refresh per item runs in the background (however many requests ask at once), so neither
    a TTL expiry under load nor a database outage stalls the hot path. Only a first load
    waits, and if the database cannot answer it the request gets a 503.
    """

    def __init__(self) -> None:
        # Re-entrant: a future that is already done runs its callback (which takes the lock)
        # inside add_done_callback, while _refresh still holds it.
        self._lock = threading.RLock()
        self._generation = 0
        self._snapshot: Snapshot | None = None
        self._keys: dict[str, tuple[float, KeySnap | None]] = {}
        self._inflight: dict[str, Future] = {}

    @property
    def ttl(self) -> float:
        return float(settings.GATEWAY["CONFIG_TTL_S"])

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._snapshot = None
            self._keys.clear()
            self._inflight.clear()

    def _refresh(self, name: str, fn, *args) -> Future:
        """One load of `name` at a time; its result is stored when it completes."""
        with self._lock:
            future = self._inflight.get(name)
            if future is None:
                future = runtime.submit_db("config", fn, *args)
                self._inflight[name] = future
                generation = self._generation
                future.add_done_callback(lambda f: self._store(name, f, generation))
        return future

    def _store(self, name: str, future: Future, generation: int) -> None:
        with self._lock:
            if self._inflight.get(name) is future:
                del self._inflight[name]
            if generation != self._generation:
                return  # invalidated meanwhile: this result may predate the edit
            if future.exception() is not None:
                log.warning("config refresh of %s failed: %r", name, future.exception())
                return
            if name == "snapshot":
                self._snapshot = future.result()
            else:
                if len(self._keys) > 50_000:  # bound the memory a flood of bad keys can take
                    self._keys.clear()
                self._keys[name] = (time.monotonic(), future.result())

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
        future = self._refresh("snapshot", load_snapshot)
        if snap is not None:
            return snap
        return await self._first_load(future)

    def snapshot_sync(self) -> Snapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.loaded_at > self.ttl:
            snap = self._snapshot = load_snapshot()
        return snap

    async def key(self, hashed_secret: str) -> KeySnap | None:
        hit = self._keys.get(hashed_secret)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl:
            return hit[1]
        future = self._refresh(hashed_secret, load_key, hashed_secret)
        if hit is not None:
            return hit[1]
        return await self._first_load(future)


@cache
def store() -> ConfigStore:
    return ConfigStore()
