"""Import a configuration file: create or update providers, models, routes, teams, features
and budgets, in one transaction. Nothing is ever deleted: records the file does not name are
left as they are. An entry describes its whole record (see `fields`), and the ordered lists
it names (a model's fallbacks, a route's chain) replace the stored ones."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import models, transaction

from budgets.models import Budget
from gateway.configfile.fields import (
    BUDGET_FIELDS,
    FEATURE_FIELDS,
    MODEL_FIELDS,
    PROVIDER_FIELDS,
    ROUTE_FIELDS,
    TEAM_FIELDS,
    ConfigFileError,
    Field,
    parse_fields,
)
from gateway.configfile.sections import (
    entries,
    import_baseline,
    sync_ordered,
    team_budgets,
    team_features,
)
from gateway.models import Fallback, LanguageModel, Provider, RouteRule, RouteStep, Team

SECTIONS = ("version", "providers", "models", "routes", "baseline", "teams")


@dataclass
class ImportReport:
    """How many records of each kind were created, updated or left unchanged."""

    counts: dict[str, Counter] = field(default_factory=dict)

    def note(self, kind: str, status: str) -> None:
        self.counts.setdefault(kind, Counter())[status] += 1

    def total(self, status: str) -> int:
        return sum(c[status] for c in self.counts.values())

    def lines(self) -> list[str]:
        return [
            f"{kind}: {c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
            for kind, c in self.counts.items()
        ]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML configuration file, refusing anything but a mapping of known sections."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a mapping of sections {SECTIONS[1:]}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigFileError(f"{path}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    if data.get("version", 1) != 1:
        raise ConfigFileError(f"{path}: version {data['version']!r} is not supported (use 1)")
    return data


def import_config(data: dict[str, Any]) -> ImportReport:
    """Create or update every record the configuration names; all or nothing."""
    report = ImportReport()
    with transaction.atomic():
        _import_providers(data.get("providers"), report)
        _import_models(data.get("models"), report)
        _import_routes(data.get("routes"), report)
        import_baseline(data.get("baseline"), None, "baseline", report)
        _import_teams(data.get("teams"), report)
    return report


def upsert(
    model: type[models.Model], lookup: dict, values: dict, *, where: str, fields: tuple[Field, ...]
) -> tuple[Any, str]:
    """Find the record by `lookup`, set `values`, validate and save it if anything changed."""
    obj = model._default_manager.filter(**lookup).first()
    status = "created" if obj is None else "unchanged"
    if obj is None:
        obj = model(**lookup)
    elif any(getattr(obj, attr) != value for attr, value in values.items()):
        status = "updated"
    for attr, value in values.items():
        setattr(obj, attr, value)
    if status != "unchanged":
        validate(obj, where=where, fields=fields)
        obj.save()
    return obj, status


def validate(obj: models.Model, *, where: str, fields: tuple[Field, ...]) -> None:
    """Run the model's own validation; report its errors under the YAML keys."""
    try:
        obj.full_clean()
    except ValidationError as exc:
        keys = {f.attr: f.key for f in fields}
        problems = [
            f"{keys.get(attr, attr)}: {' '.join(msgs)}" if attr != "__all__" else " ".join(msgs)
            for attr, msgs in exc.message_dict.items()
        ]
        raise ConfigFileError(f"{where}: {'; '.join(problems)}") from None


def _import_providers(section: Any, report: ImportReport) -> None:
    for where, name, entry in entries(section, "providers", PROVIDER_FIELDS):
        values = parse_fields(entry, PROVIDER_FIELDS, where)
        _, status = upsert(Provider, {"name": name}, values, where=where, fields=PROVIDER_FIELDS)
        report.note("providers", status)


def _import_models(section: Any, report: ImportReport) -> None:
    extra = ("provider", "upstream", "fallbacks")
    parsed = []
    for where, name, entry in entries(section, "models", MODEL_FIELDS, extra):
        values = parse_fields(entry, MODEL_FIELDS, where)
        provider_name = entry.get("provider")
        values["provider"] = Provider.objects.filter(name=provider_name).first()
        if values["provider"] is None:
            raise ConfigFileError(f"{where}: unknown provider {provider_name!r}")
        values["upstream_id"] = str(entry.get("upstream") or name)
        obj, status = upsert(
            LanguageModel, {"name": name}, values, where=where, fields=MODEL_FIELDS
        )
        parsed.append((where, obj, status, entry.get("fallbacks") or []))
    # Fallbacks may name models further down the file, so they are linked once all exist.
    for where, obj, status, fallbacks in parsed:
        targets = _model_ids(fallbacks, f"{where}.fallbacks")
        if obj.id in targets:
            raise ConfigFileError(f"{where}.fallbacks: a model cannot fall back to itself")
        changed = sync_ordered(
            Fallback.objects.filter(model=obj),
            "target_id",
            targets,
            functools.partial(_fallback, obj),
        )
        report.note("models", "updated" if changed and status == "unchanged" else status)


def _import_routes(section: Any, report: ImportReport) -> None:
    for position, (where, name, entry) in enumerate(
        entries(section, "routes", ROUTE_FIELDS, ("chain",))
    ):
        values = parse_fields(entry, ROUTE_FIELDS, where)
        values["position"] = position
        chain = _model_ids(entry.get("chain"), f"{where}.chain")
        if not chain:
            raise ConfigFileError(f"{where}.chain: name at least one model")
        rule, status = upsert(RouteRule, {"name": name}, values, where=where, fields=ROUTE_FIELDS)
        changed = sync_ordered(
            RouteStep.objects.filter(rule=rule),
            "model_id",
            chain,
            functools.partial(_route_step, rule),
        )
        report.note("routes", "updated" if changed and status == "unchanged" else status)


def _import_teams(section: Any, report: ImportReport) -> None:
    extra = ("features", "budgets", "baseline")
    for where, name, entry in entries(section, "teams", TEAM_FIELDS, extra):
        values = parse_fields(entry, TEAM_FIELDS, where)
        team, status = upsert(Team, {"name": name}, values, where=where, fields=TEAM_FIELDS)
        report.note("teams", status)
        for f_where, f_name, f_entry in team_features(entry.get("features"), where, FEATURE_FIELDS):
            f_values = parse_fields(f_entry, FEATURE_FIELDS, f_where)
            _, f_status = upsert(
                team.features.model,
                {"team": team, "name": f_name},
                f_values,
                where=f_where,
                fields=FEATURE_FIELDS,
            )
            report.note("features", f_status)
        _import_budgets(team, entry.get("budgets"), where, report)
        import_baseline(entry.get("baseline"), team, f"{where}.baseline", report)


def _import_budgets(team: Team, section: Any, team_where: str, report: ImportReport) -> None:
    """A budget has no name: the n-th budget the file gives a target (the team, or one of its
    features) updates the n-th stored budget of that target."""
    seen: Counter = Counter()
    for where, feature_name, entry in team_budgets(section, team_where, BUDGET_FIELDS):
        values = parse_fields(entry, BUDGET_FIELDS, where)
        feature = None
        if feature_name is not None:
            feature = team.features.filter(name=feature_name).first()
            if feature is None:
                raise ConfigFileError(
                    f"{where}.feature: {team.name} has no feature {feature_name!r}"
                )
        values["scope"] = Budget.Scope.FEATURE if feature else Budget.Scope.TEAM
        same_target = Budget.objects.filter(team=team, feature=feature).order_by("id")
        existing = list(same_target.values_list("id", flat=True))
        nth = seen[feature_name]
        seen[feature_name] += 1
        lookup = {"id": existing[nth]} if nth < len(existing) else {"id": None}
        values.update(team=team, feature=feature)
        _, status = upsert(Budget, lookup, values, where=where, fields=BUDGET_FIELDS)
        report.note("budgets", status)


def _model_ids(names: Any, where: str) -> list[int]:
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigFileError(f"{where}: expected a list of model names")
    if len(set(names)) != len(names):
        raise ConfigFileError(f"{where}: a model is named twice")
    found = dict(LanguageModel.objects.filter(name__in=names).values_list("name", "id"))
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigFileError(f"{where}: unknown model(s) {missing}")
    return [found[n] for n in names]


def _fallback(model: LanguageModel, position: int, target_id: int) -> Fallback:
    return Fallback(model=model, target_id=target_id, position=position)


def _route_step(rule: RouteRule, position: int, model_id: int) -> RouteStep:
    return RouteStep(rule=rule, model_id=model_id, position=position)
