"""The hot path's in-process copy of what admins edit: teams, features, budgets, providers,
models, routes and keys, and how it is read from the database.

The hot path never queries the database on a steady state: it reads an immutable `Snapshot`
loaded in one transaction of a few queries. How the process keeps it fresh (a version
published in Redis on every change, a message to every process, a partial refresh of what
changed) is in gateway/configstore.py and gateway/configversion.py.

Keys are part of the snapshot (by the SHA-256 of their secret), so a key the snapshot does
not hold costs no query of its own: the caller asks for a snapshot loaded after its request
arrived (`fresh_snapshot`), and every such request shares one refresh (which looks up every
waiting hash in one query), at most one per `GATEWAY["AUTH_RELOAD_INTERVAL_S"]`. A key
created in another process therefore works on its first request here, and a flood of
random keys costs at most one query per interval, not a query per key. Hashes still
unknown after such a refresh are remembered for `GATEWAY["AUTH_NEGATIVE_TTL_S"]` (bounded
in number, forgotten whenever a new snapshot is stored) and refused without waiting for
another refresh (gateway/auth.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gateway import ceiling, keyvars

# The process's copy of the snapshot and how it is refreshed, re-exported: callers import
# `store` from here.
from gateway.configstore import NEGATIVE_CACHE_MAX, ConfigStore, store
from gateway.money import Prices, usd_to_units
from gateway.providers.base import ProviderConfig


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
    # The config version (gateway/configversion.py) read before the load: every change
    # published up to it is in this copy. None: Redis could not be read.
    version: tuple[str, int] | None = None
    key_ids: dict[int, str] = field(default_factory=dict)  # key id -> its hash in `keys`
    full_at: float = -math.inf  # when the full load this copy derives from started
    # (ceiling, chain's model names) -> {fallback above that ceiling: why}; gateway/ceiling.py.
    # Computed whenever a snapshot is built (in the background), never per request.
    ceiling_skips: dict[tuple[Decimal, tuple[str, ...]], dict[str, str]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "ceiling_skips", ceiling.table(self.teams, self.models, self.routes)
        )


def load_snapshot(version: tuple[str, int] | None = None) -> Snapshot:
    """Read everything the hot path needs from the database: a handful of queries in one
    transaction. `loaded_at` is when the load started, so a snapshot sees every row that
    was committed before that instant."""
    started = time.monotonic()
    with transaction.atomic():
        # Keys first: a key's team and feature were committed before it, so every key read
        # here finds them in the queries below (each statement sees what was committed when
        # it began).
        keys = _load_keys(None)
        teams = _load_teams(None)
        llms, routes = _load_models(), _load_routes()
    key_ids = {k.id: hashed for hashed, k in keys.items()}
    return Snapshot(teams, llms, routes, keys, started, version, key_ids, started)


def refresh_snapshot(
    base: Snapshot, scopes: set[str], lookups: set[str], version: tuple[str, int] | None
) -> Snapshot:
    """`base` with what `scopes` name read again (gateway/configversion.py: "k:<key id>",
    "t:<team id>", "t:*" every team), the key hashes in `lookups` looked up in one query, and
    the small tables (providers, models, routes: a provider key rotated in its file) always
    read again. The 100,000 keys and 5,000 teams are not read when nothing names them."""
    started = time.monotonic()
    key_ids = {int(s[2:]) for s in scopes if s.startswith("k:")}
    team_ids = {int(s[2:]) for s in scopes if s.startswith("t:") and s != "t:*"}
    with transaction.atomic():
        found: dict[str, KeySnap] = {}
        if key_ids:
            found.update(_load_keys(Q(id__in=key_ids)))
        for chunk in _chunks(sorted(lookups), 500):
            found.update(_load_keys(Q(hashed_secret__in=chunk)))
        teams = base.teams
        if "t:*" in scopes:
            teams = _load_teams(None)
        elif team_ids:
            teams = {i: t for i, t in base.teams.items() if i not in team_ids}
            teams.update(_load_teams(team_ids))
        llms, routes = _load_models(), _load_routes()
    keys, ids = base.keys, base.key_ids
    if found or key_ids:
        keys, ids = dict(keys), dict(ids)
        for key_id in key_ids:  # deleted ones are not found again
            hashed = ids.pop(key_id, None)
            if hashed is not None:
                keys.pop(hashed, None)
        for hashed, key in found.items():
            old = ids.get(key.id)
            if old is not None and old != hashed:
                keys.pop(old, None)
            keys[hashed], ids[key.id] = key, hashed
    return Snapshot(teams, llms, routes, keys, started, version, ids, base.full_at)


def _chunks(items: list[str], size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _load_keys(where: Q | None) -> dict[str, KeySnap]:
    """Keys by hash: every key, or those `where` selects (one query either way)."""
    from gateway.models import ApiKey

    rows = ApiKey.objects.order_by()
    if where is not None:
        rows = rows.filter(where)
    return {
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
        for row in rows.values_list(
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


def _load_teams(ids: set[int] | None) -> dict[int, TeamSnap]:
    """Teams with their features and enabled budgets: every team, or those of `ids`."""
    from budgets.models import Budget
    from gateway.models import Feature, Team

    team_rows, feature_rows = Team.objects.all(), Feature.objects.order_by()
    budget_rows = Budget.objects.filter(enabled=True).order_by()
    if ids is not None:
        team_rows = team_rows.filter(id__in=ids)
        feature_rows = feature_rows.filter(team_id__in=ids)
        budget_rows = budget_rows.filter(team_id__in=ids)
    features: dict[int, dict[str, FeatureSnap]] = {}
    for f in feature_rows:
        features.setdefault(f.team_id, {})[f.name] = FeatureSnap(
            f.id,
            f.name,
            f.default_cache_ttl,
            f.output_cap or f.learned_output_cap,
            f.cache_sampled,
        )
    team_list = list(team_rows)
    teams_tz = {t.id: t.timezone for t in team_list}
    budgets: dict[int, list[BudgetSnap]] = {}
    for b in budget_rows:
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
    return {
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
        for t in team_list
    }


def _load_models() -> dict[str, ModelSnap]:
    from gateway.models import LanguageModel

    found: dict[str, ModelSnap] = {}
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
        found[m.name] = ModelSnap(
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
    return found


def _load_routes() -> tuple[RouteSnap, ...]:
    from gateway.models import RouteRule

    return tuple(
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


__all__ = [
    "NEGATIVE_CACHE_MAX",
    "ConfigStore",
    "Snapshot",
    "load_snapshot",
    "refresh_snapshot",
    "store",
]
