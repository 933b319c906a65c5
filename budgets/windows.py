"""Budget windows: calendar days and months starting at midnight in the team's time zone."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAILY = "daily"
MONTHLY = "monthly"
WINDOWS = (DAILY, MONTHLY)


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # "daily" or "monthly"
    key: str  # 2026-11-27 or 2026-11, in the team's time zone
    start: datetime  # aware
    end: datetime  # aware: when the window resets

    def seconds_left(self, now: datetime) -> int:
        """Whole seconds until the reset, rounded up (at least 1, for Retry-After)."""
        left = (self.end - now).total_seconds()
        return max(1, int(-(-left // 1)))


def _midnight(day, tz: zoneinfo.ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def current_windows(tz_name: str, now: datetime | None = None) -> tuple[Window, Window]:
    """The daily and the monthly window that `now` falls in, in the time zone `tz_name`."""
    tz = zoneinfo.ZoneInfo(tz_name or "UTC")
    local = (now or datetime.now(UTC)).astimezone(tz)
    today = local.date()
    first = today.replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    daily = Window(
        DAILY, today.isoformat(), _midnight(today, tz), _midnight(today + timedelta(days=1), tz)
    )
    monthly = Window(
        MONTHLY, first.strftime("%Y-%m"), _midnight(first, tz), _midnight(next_month, tz)
    )
    return daily, monthly


def window_named(tz_name: str, name: str, now: datetime | None = None) -> Window:
    daily, monthly = current_windows(tz_name, now)
    return daily if name == DAILY else monthly


def previous_day(tz_name: str, now: datetime | None = None) -> Window:
    """Yesterday in the team's time zone (the daily digest's window)."""
    daily, _ = current_windows(tz_name, now)
    return current_windows(tz_name, daily.start - timedelta(seconds=1))[0]
