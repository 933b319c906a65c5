"""The filters every report page shares (team, feature, date range), read from the
querystring and kept across pages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

from django.http import QueryDict
from django.utils import timezone

from gateway.models import Feature, Team
from reports.rollups import floor_hour

RANGES = {
    "24h": dt.timedelta(hours=24),
    "48h": dt.timedelta(hours=48),
    "7d": 7,
    "30d": 30,
    "90d": 90,
}
DEFAULT_RANGE = "7d"
MAX_CUSTOM_DAYS = 400
HOURLY_UP_TO = dt.timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class ReportFilters:
    start: dt.datetime  # UTC, hour-aligned, inclusive
    end: dt.datetime  # UTC, hour-aligned, exclusive
    range_key: str
    team: str  # selected team name, "" for all
    feature: str  # selected feature name (across teams), "" for all
    team_ids: frozenset[int] | None  # the teams to read; None for every team
    feature_keys: frozenset[int] | None  # rollup feature keys to read; None for all

    @property
    def hourly(self) -> bool:
        return self.end - self.start <= HOURLY_UP_TO

    @property
    def last_day(self) -> dt.date:
        """The last day the range covers (its end is exclusive)."""
        return (self.end - dt.timedelta(microseconds=1)).date()

    @property
    def querystring(self) -> str:
        params = {"range": self.range_key, "team": self.team, "feature": self.feature}
        if self.range_key == "custom":
            params["start"] = self.start.date().isoformat()
            params["end"] = self.last_day.isoformat()
        return urlencode({k: v for k, v in params.items() if v})

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "range": self.range_key,
            "team": self.team,
            "feature": self.feature,
            "granularity": "hour" if self.hourly else "day",
        }


def parse_filters(query: QueryDict, *, allowed: frozenset[int] | None) -> ReportFilters:
    """Read filters; unknown or malformed values fall back to the defaults."""
    start, end, range_key = _window(query)
    team = query.get("team", "").strip()
    team_ids = allowed
    if team:
        team_qs = Team.objects.filter(name=team)
        if allowed is not None:
            team_qs = team_qs.filter(id__in=allowed)
        team_ids = frozenset(team_qs.values_list("id", flat=True))
    feature = query.get("feature", "").strip()
    feature_keys = None
    if feature:
        feature_qs = Feature.objects.filter(name=feature)
        if team_ids is not None:
            feature_qs = feature_qs.filter(team_id__in=team_ids)
        feature_keys = frozenset(feature_qs.values_list("id", flat=True))
    return ReportFilters(start, end, range_key, team, feature, team_ids, feature_keys)


def _window(query: QueryDict) -> tuple[dt.datetime, dt.datetime, str]:
    now = timezone.now()
    end = floor_hour(now) + dt.timedelta(hours=1)
    range_key = query.get("range", DEFAULT_RANGE)
    if range_key == "custom":
        custom = _custom_window(query.get("start", ""), query.get("end", ""))
        if custom:
            return (*custom, "custom")
        range_key = DEFAULT_RANGE
    span = RANGES.get(range_key)
    if span is None:
        range_key, span = DEFAULT_RANGE, RANGES[DEFAULT_RANGE]
    if isinstance(span, dt.timedelta):
        return end - span, end, range_key
    today = floor_hour(now).replace(hour=0)
    return today - dt.timedelta(days=span - 1), end, range_key


def _custom_window(start: str, end: str) -> tuple[dt.datetime, dt.datetime] | None:
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        return None
    if last < first or (last - first).days > MAX_CUSTOM_DAYS:
        return None
    midnight = dt.time(tzinfo=dt.UTC)
    return (
        dt.datetime.combine(first, midnight),
        dt.datetime.combine(last + dt.timedelta(days=1), midnight),
    )


def filter_choices(allowed: frozenset[int] | None) -> dict[str, list[str]]:
    """Team and feature names a reader may pick."""
    teams = Team.objects.all() if allowed is None else Team.objects.filter(id__in=allowed)
    features = (
        Feature.objects.filter(team__in=teams).order_by("name").values_list("name", flat=True)
    )
    return {
        "teams": list(teams.order_by("name").values_list("name", flat=True)),
        "features": sorted(set(features)),
    }
