"""Budget windows: calendar days and months starting at midnight in the team's time zone.

Which clock decides what:
- **The process clock** (`datetime.now`) selects the window a request falls in: which day and
  which month, in the team's time zone. Processes whose clocks differ by a few seconds may
  put a request at midnight into either day; both are correct answers.
- **Redis's clock** decides every expiry. Counters, reservations, tombstones, rate buckets and
  alert claims are given relative lifetimes (`PEXPIRE`, or `TIME` read inside the scripts),
  never an absolute instant computed here: a process whose clock is off by days would
  otherwise write counters that Redis drops as they are written. `Window.ttl_ms` is the one
  place a window's end becomes such a lifetime.
"""

from __future__ import annotations

import time
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.process import state

DAILY = "daily"
MONTHLY = "monthly"


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

    def ttl_ms(self, grace_s: int, at: float | None = None) -> int:
        """How long (ms, relative: for PEXPIRE) a counter of this window must live from `at`
        (the process clock, epoch seconds): until the window ends, plus `grace_s`.

        Only the span is taken from the process clock, never the instant, so Redis applies it
        by its own clock. At least `grace_s`: a window that just ended keeps its counters for
        the grace period, whatever the two clocks say."""
        left_s = self.end.timestamp() - (time.time() if at is None else at)
        return int((max(0.0, left_s) + grace_s) * 1000)


def _midnight(day, tz: zoneinfo.ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def current_windows(tz_name: str, now: datetime | None = None) -> tuple[Window, Window]:
    """The daily and the monthly window that `now` falls in, in the time zone `tz_name`.

    The windows last computed for each time zone are kept in the process state
    (gateway/process.py), with the span (epoch seconds) they are current for. Every request
    needs its budgets' windows; computing them takes ~25 µs (zoneinfo and date arithmetic),
    looking them up well under 1 µs. Bounded by the number of time zones."""
    now = now or datetime.now(UTC)
    at = now.timestamp()
    current = state().windows
    known = current.get(tz_name)
    if known is not None and known[0] <= at < known[1]:
        return known[2]
    windows = _windows_at(tz_name, now)
    daily = windows[0]
    current[tz_name] = (daily.start.timestamp(), daily.end.timestamp(), windows)
    return windows


def _windows_at(tz_name: str, now: datetime) -> tuple[Window, Window]:
    tz = zoneinfo.ZoneInfo(tz_name or "UTC")
    local = now.astimezone(tz)
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


def previous_day(tz_name: str, now: datetime | None = None) -> Window:
    """Yesterday in the team's time zone (the daily digest's window)."""
    daily, _ = current_windows(tz_name, now)
    return current_windows(tz_name, daily.start - timedelta(seconds=1))[0]
