"""Walking the sections of a configuration file: each entry checked for shape, a name and
unknown keys (a typo such as `input_price` is an error, not a silently ignored key)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.db import models

from gateway.configfile.fields import ConfigFileError, Field
from gateway.models import Baseline, LanguageModel


def entries(
    section: Any, kind: str, fields: tuple[Field, ...], extra: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, dict]]:
    """Yield (where, name, entry) for each entry of a top-level section."""
    if section is None:
        return
    if not isinstance(section, list):
        raise ConfigFileError(f"{kind}: expected a list of entries")
    allowed = {"name", *extra, *(f.key for f in fields)}
    seen: set[str] = set()
    for i, entry in enumerate(section):
        where = f"{kind}[{i}]"
        name = _entry_name(entry, where)
        where = f"{where} ({name})"
        check_keys(entry, allowed, where)
        if name in seen:
            raise ConfigFileError(f"{where}: {name!r} appears twice in {kind}")
        seen.add(name)
        yield where, name, entry


def team_features(
    section: Any, team_where: str, fields: tuple[Field, ...]
) -> Iterator[tuple[str, str, dict]]:
    """A team's features: each a bare name or a mapping {name, default_cache_ttl, ...}."""
    if section is None:
        return
    if not isinstance(section, list):
        raise ConfigFileError(f"{team_where}.features: expected a list of feature names")
    seen: set[str] = set()
    for i, entry in enumerate(section):
        where = f"{team_where}.features[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        name = _entry_name(entry, where)
        where = f"{where} ({name})"
        check_keys(entry, {"name", *(f.key for f in fields)}, where)
        if name in seen:
            raise ConfigFileError(f"{where}: {name!r} appears twice")
        seen.add(name)
        yield where, name, entry


def team_budgets(
    section: Any, team_where: str, fields: tuple[Field, ...]
) -> Iterator[tuple[str, str | None, dict]]:
    """Yield (where, feature name or None for a team budget, entry)."""
    if section is None:
        return
    if not isinstance(section, list):
        raise ConfigFileError(f"{team_where}.budgets: expected a list of budgets")
    allowed = {"feature", *(f.key for f in fields)}
    for i, entry in enumerate(section):
        where = f"{team_where}.budgets[{i}]"
        if not isinstance(entry, dict):
            raise ConfigFileError(f'{where}: expected a mapping such as {{daily_usd: "50"}}')
        check_keys(entry, allowed, where)
        feature = entry.get("feature")
        if feature is not None and not isinstance(feature, str):
            raise ConfigFileError(f"{where}.feature: expected a feature name")
        yield where, feature, entry


def import_baseline(entry: Any, team: Any, where: str, report: Any) -> None:
    """`baseline: {model: gpt-4o, cache: false}`: at the top level the global default, in
    a team that team's own (gateway/pricehistory.py says what it is for)."""
    if entry is None:
        return
    if not isinstance(entry, dict):
        raise ConfigFileError(
            f"{where}: expected a mapping such as {{model: gpt-4o, cache: false}}"
        )
    check_keys(entry, {"model", "cache"}, where)
    model = LanguageModel.objects.filter(name=entry.get("model")).first()
    if model is None:
        raise ConfigFileError(f"{where}.model: unknown model {entry.get('model')!r}")
    cache = entry.get("cache", False)
    if not isinstance(cache, bool):
        raise ConfigFileError(f"{where}.cache: expected true or false, got {cache!r}")
    current = Baseline.objects.filter(team=team).first()
    if current is not None and (current.model_id, current.cache) == (model.id, cache):
        report.note("baselines", "unchanged")
        return
    Baseline.objects.update_or_create(team=team, defaults={"model": model, "cache": cache})
    report.note("baselines", "created" if current is None else "updated")


def check_keys(entry: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigFileError(f"{where}: unknown key(s) {unknown}; known: {sorted(allowed)}")


def sync_ordered(
    current: models.QuerySet, attr: str, wanted: list[int], make: Callable[[int, int], models.Model]
) -> bool:
    """Make an ordered child list (fallbacks, route steps) equal to `wanted`; True if changed."""
    if list(current.values_list(attr, flat=True)) == wanted:
        return False
    current.delete()
    current.model.objects.bulk_create([make(pos, ref) for pos, ref in enumerate(wanted)])
    return True


def _entry_name(entry: Any, where: str) -> str:
    if not isinstance(entry, dict):
        raise ConfigFileError(f"{where}: expected a mapping with a `name`")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigFileError(f"{where}: every entry needs a `name`")
    return name
