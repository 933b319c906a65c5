"""The filters every report page shares (team, feature, endpoint, date range), read from
the querystring and kept across pages."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.http import QueryDict
from django.utils import timezone

from gateway.models import ENDPOINTS, Feature, Team
from reports.rollups import floor_hour

RANGES = {
    "24h": dt.timedelta(hours=24),
    "48h": dt.timedelta(hours=48),
    "7d": 7,
    "30d": 30,
    "90d": 90,
}
MONTH_RANGES = ("this-month", "last-month")  # calendar months (UTC), always per day
RANGE_LABELS = {
    **{key: f"Last {key}" for key in RANGES},
    "this-month": "This month",
    "last-month": "Last month",
    "custom": "Custom",
}
DEFAULT_RANGE = "7d"
MAX_CUSTOM_DAYS = 400
# Custom dates outside these bounds are refused (9999-12-31 + 1 day used to overflow: a 500).
EARLIEST_DATE = dt.date(2000, 1, 1)
MAX_FUTURE_DAYS = 366
MAX_NAME = 64  # Team and Feature names are slugs of at most 64 characters
HOURLY_UP_TO = dt.timedelta(hours=48)
SINCE = re.compile(r"^(\d{1,3})([dh])$")  # what-if and rebuild windows: 30d, 12h


@dataclass(frozen=True, slots=True)
class ReportFilters:
    start: dt.datetime  # UTC, hour-aligned, inclusive
    end: dt.datetime  # UTC, hour-aligned, exclusive
    range_key: str
    team: str  # selected team name, "" for all
    feature: str  # selected feature name (across teams), "" for all
    team_ids: frozenset[int] | None  # the teams to read; None for every team
    feature_keys: frozenset[int] | None  # rollup feature keys to read; None for all
    endpoint: str = ""  # the API operation (UsageRecord.endpoint), "" for all
    per_day: bool = False  # days asked for (a month, a custom range of days): never hourly

    @property
    def hourly(self) -> bool:
        return not self.per_day and self.end - self.start <= HOURLY_UP_TO

    @property
    def last_day(self) -> dt.date:
        """The last day the range covers (its end is exclusive)."""
        return (self.end - dt.timedelta(microseconds=1)).date()

    @property
    def querystring(self) -> str:
        params = {
            "range": self.range_key,
            "team": self.team,
            "feature": self.feature,
            "endpoint": self.endpoint,
        }
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
            "endpoint": self.endpoint,
            "granularity": "hour" if self.hourly else "day",
        }


class FilterError(ValueError):
    """A filter the reports cannot apply; the views answer 400 with `message`, naming `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def parse_filters(query: QueryDict, *, allowed: frozenset[int] | None) -> ReportFilters:
    """Read filters; a missing one takes its default, a malformed one raises FilterError."""
    start, end, range_key, per_day = _window(query)
    team = _name(query, "team")
    team_ids = allowed
    if team:
        team_qs = Team.objects.filter(name=team)
        if allowed is not None:
            team_qs = team_qs.filter(id__in=allowed)
        team_ids = frozenset(team_qs.values_list("id", flat=True))
    feature = _name(query, "feature", longest=2 * MAX_NAME + 1)
    feature_keys = None
    if feature:
        # "team/feature" names one feature; a bare name, that feature in every team picked.
        team_part, _, feature_part = feature.rpartition("/")
        feature_qs = Feature.objects.filter(name=feature_part)
        if team_part:
            feature_qs = feature_qs.filter(team__name=team_part)
        if team_ids is not None:
            feature_qs = feature_qs.filter(team_id__in=team_ids)
        feature_keys = frozenset(feature_qs.values_list("id", flat=True))
    endpoint = query.get("endpoint", "").strip()
    if endpoint and endpoint not in ENDPOINTS:
        shown = ", ".join(ENDPOINTS)
        raise FilterError("endpoint", f"endpoint must be one of {shown}; got {endpoint[:40]!r}.")
    return ReportFilters(
        start, end, range_key, team, feature, team_ids, feature_keys, endpoint, per_day
    )


def _name(query: QueryDict, param: str, longest: int = MAX_NAME) -> str:
    """A team or feature name: printable text no longer than a name can be (PostgreSQL text
    cannot even hold a NUL: such a value used to reach the query and fail as a 500)."""
    value = query.get(param, "").strip()
    if len(value) > longest:
        raise FilterError(param, f"{param} must be a name of at most {longest} characters.")
    if any(not ch.isprintable() for ch in value):
        raise FilterError(param, f"{param} must not contain control characters.")
    return value


def _window(query: QueryDict) -> tuple[dt.datetime, dt.datetime, str, bool]:
    """(start, end, range key, per day). No range ends after the current hour."""
    now = timezone.now()
    end = floor_hour(now) + dt.timedelta(hours=1)
    range_key = query.get("range", "").strip() or DEFAULT_RANGE
    if range_key == "custom":
        start, last = _custom_window(query.get("start", ""), query.get("end", ""), now)
        # A range reaching into the future stops at the current hour; it keeps the
        # granularity of the days asked for.
        return start, max(start, min(last, end)), "custom", last - start > HOURLY_UP_TO
    if range_key in MONTH_RANGES:
        this_month = floor_hour(now).replace(day=1, hour=0)
        if range_key == "this-month":
            return this_month, end, range_key, True
        return (this_month - dt.timedelta(days=1)).replace(day=1), this_month, range_key, True
    span = RANGES.get(range_key)
    if span is None:
        shown = ", ".join([*RANGES, *MONTH_RANGES, "custom"])
        raise FilterError("range", f"range must be one of {shown}; got {range_key[:40]!r}.")
    if isinstance(span, dt.timedelta):
        return end - span, end, range_key, False
    today = floor_hour(now).replace(hour=0)
    return today - dt.timedelta(days=span - 1), end, range_key, False


def _date(value: str, param: str, latest: dt.date) -> dt.date:
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(
            param, f"{param} must be a date such as 2025-01-31 (range=custom needs start and end)."
        ) from None
    if not EARLIEST_DATE <= day <= latest:
        message = f"{param} must be between {EARLIEST_DATE} and {latest}; got {day}."
        raise FilterError(param, message)
    return day


def _custom_window(start: str, end: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    latest = now.date() + dt.timedelta(days=MAX_FUTURE_DAYS)
    first, last = _date(start, "start", latest), _date(end, "end", latest)
    if last < first:
        raise FilterError("end", f"end ({last}) is before start ({first}).")
    if (last - first).days > MAX_CUSTOM_DAYS:
        raise FilterError(
            "end", f"a custom range covers at most {MAX_CUSTOM_DAYS + 1} days; pick a shorter one."
        )
    midnight = dt.time(tzinfo=dt.UTC)
    return (
        dt.datetime.combine(first, midnight),
        dt.datetime.combine(last + dt.timedelta(days=1), midnight),
    )


def since_window(since: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """`30d`: today and the 29 days before it (whole UTC days); `12h`: the last 12 hours."""
    match = SINCE.match(since.strip())
    if match is None or int(match.group(1)) == 0:
        raise FilterError("since", f"since must look like 30d or 12h; got {since[:20]!r}")
    n, unit = int(match.group(1)), match.group(2)
    end = floor_hour(now) + dt.timedelta(hours=1)
    if unit == "h":
        return end - dt.timedelta(hours=n), end
    return floor_hour(now).replace(hour=0) - dt.timedelta(days=n - 1), end


def filter_choices(allowed: frozenset[int] | None) -> dict:
    """Team names, team/feature names a reader may pick, and the endpoints. A list longer
    than `REPORTS_SELECT_LIMIT` is None: the page then offers a text box whose suggestions
    come from `names()` as the reader types (5,000 teams and 20,000 features were 1.5 MB of
    options on every page)."""
    limit = settings.REPORTS_SELECT_LIMIT
    teams = Team.objects.all() if allowed is None else Team.objects.filter(id__in=allowed)
    features = Feature.objects.filter(team__in=teams)
    team_names = list(teams.order_by("name").values_list("name", flat=True)[: limit + 1])
    feature_names = list(
        features.order_by("team__name", "name").values_list("team__name", "name")[: limit + 1]
    )
    return {
        "teams": team_names if len(team_names) <= limit else None,
        "features": [f"{t}/{n}" for t, n in feature_names] if len(feature_names) <= limit else None,
        "endpoints": list(ENDPOINTS),
    }


NAMES_SHOWN = 20


def names(kind: str, query: str, allowed: frozenset[int] | None) -> list[str]:
    """Up to NAMES_SHOWN team names, or team/feature names, containing `query` (any case),
    among those the reader may see."""
    teams = Team.objects.all() if allowed is None else Team.objects.filter(id__in=allowed)
    if kind == "team":
        found = teams.filter(name__icontains=query).order_by("name")
        return list(found.values_list("name", flat=True)[:NAMES_SHOWN])
    team_part, _, feature_part = query.rpartition("/")
    found = Feature.objects.filter(team__in=teams, name__icontains=feature_part)
    if team_part:
        found = found.filter(team__name__icontains=team_part)
    pairs = found.order_by("team__name", "name").values_list("team__name", "name")
    return [f"{t}/{n}" for t, n in pairs[:NAMES_SHOWN]]
