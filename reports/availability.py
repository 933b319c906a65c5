"""Provider availability: what each provider did and what the clients saw, read from the
ledger's attempt logs and the circuit breakers' open and close events.

- Per provider: calls (attempts that reached it), failures, and how many of those failures
  a fallback rescued (the request was answered by another model); rescues it made for
  others; attempts it never got (circuit open, above the fallback price ceiling).
- The success rate as clients saw it: answered, refused (budgets, rate limits) and failed
  shown apart, so a refusal is never counted as a success nor hidden as a non-error.
- Outage windows: from a circuit's first opening to the probe that closed it (still open:
  the window runs to now), with what the fallbacks cost during it compared to the first
  choices' price, and minute by minute for windows in the last 48 hours.

It reads ledger rows of the range (the report's filters), not rollups: the attempt log is
per request. Requests answered at their first attempt are counted in SQL; only the others
(fallbacks, failures, refusals: a small share outside an outage) are streamed, a few columns
each.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from gateway import ceiling
from gateway.models import LanguageModel, UsageRecord
from gateway.money import Prices, cost_of
from gateway.providers.base import Usage
from reports.filters import ReportFilters
from reports.models import CircuitEvent

MINUTE_DETAIL = dt.timedelta(hours=48)
NOT_CALLED = ("circuit open", ceiling.SKIP_ERROR)  # attempts that never reached the provider
FAILED = ("error", "stream_error", "lost")


def _called(entry: dict) -> bool:
    error = entry.get("error") or ""
    return error not in NOT_CALLED and not error.startswith("cannot serve")


@dataclass
class Window:
    provider: str
    start: dt.datetime
    end: dt.datetime | None = None  # None: still open
    requests: int = 0  # requests whose attempt log names the provider in the window
    rescued: int = 0
    failed: int = 0
    fallback_cost: Decimal = Decimal(0)
    first_choice_cost: Decimal = Decimal(0)
    minutes: Counter = field(default_factory=Counter)  # (minute, what) -> count

    @property
    def lead_in(self) -> dt.datetime:
        """The requests that opened the circuit began before it opened: up to a request
        deadline earlier (each counts only if this provider failed it)."""
        return self.start - dt.timedelta(seconds=settings.GATEWAY["REQUEST_DEADLINE_S"])

    def covers(self, moment: dt.datetime, now: dt.datetime) -> bool:
        return self.lead_in <= moment < (self.end or now)

    def as_dict(self, now: dt.datetime) -> dict:
        end = self.end or now
        detail = now - self.start <= MINUTE_DETAIL
        minutes = []
        if detail:
            moment = min(self.minutes, default=(self.start,))[0]
            moment = min(moment, self.start.replace(second=0, microsecond=0))
            while moment < end:
                minutes.append(
                    {
                        "minute": moment,
                        "failed": self.minutes[(moment, "failed")],
                        "skipped": self.minutes[(moment, "skipped")],
                        "rescued": self.minutes[(moment, "rescued")],
                    }
                )
                moment += dt.timedelta(minutes=1)
        return {
            "provider": self.provider,
            "start": self.start,
            "end": self.end,
            "ongoing": self.end is None,
            "minutes_long": max(1, round((end - self.start).total_seconds() / 60)),
            "requests": self.requests,
            "rescued": self.rescued,
            "failed": self.failed,
            "fallback_cost_usd": self.fallback_cost,
            "first_choice_cost_usd": self.first_choice_cost,
            "extra_cost_usd": self.fallback_cost - self.first_choice_cost,
            "minute_detail": minutes,
        }


def outage_windows(f: ReportFilters, now: dt.datetime) -> list[Window]:
    """Windows overlapping the range: each provider's first opening (repeated openings by
    failed probes extend it) to its next closing."""
    events = CircuitEvent.objects.filter(opened_at__lt=f.end).order_by("opened_at")
    # An outage that began before the range and is still open matters: look back a week.
    events = events.filter(opened_at__gte=f.start - dt.timedelta(days=7))
    open_: dict[str, Window] = {}
    windows: list[Window] = []
    for e in events.only("provider", "opened_at", "kind"):
        if e.kind == "closed":
            window = open_.pop(e.provider, None)
            if window is not None:
                window.end = e.opened_at
        elif e.provider not in open_:
            open_[e.provider] = Window(e.provider, e.opened_at)
            windows.append(window := open_[e.provider])
    return [w for w in windows if (w.end or now) > f.start]


def _ledger(f: ReportFilters):
    rows = UsageRecord.objects.filter(created_at__gte=f.start, created_at__lt=f.end)
    if f.team_ids is not None:
        rows = rows.filter(team_id__in=f.team_ids)
    if f.feature_keys is not None:
        rows = rows.filter(feature_id__in=f.feature_keys)
    return rows.order_by()


def _plain(rows):
    """Requests answered at the first attempt (or from the cache): most of the ledger,
    counted in SQL. Their attempt log holds nothing but one success."""
    return rows.filter(attempts__lte=1, status="ok")


def _eventful(rows):
    """The rest, read row by row: fallbacks, skips, failures and refusals."""
    return rows.exclude(attempts__lte=1, status="ok").values_list(
        "created_at",
        "status",
        "provider",
        "attempt_log",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cache_write_tokens",
    )


def availability(f: ReportFilters, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    windows = outage_windows(f, now)
    prices = {
        m.name: Prices(m.input_per_mtok, m.output_per_mtok, m.cached_input_per_mtok)
        for m in LanguageModel.objects.all()
    }
    per: dict[str, Counter] = defaultdict(Counter)
    clients: Counter = Counter()
    rows = _ledger(f)
    plain = _plain(rows)
    clients["ok"] = plain.count()
    for provider, n in plain.filter(attempts=1).values_list("provider").annotate(n=Count("id")):
        per[provider]["calls"] += n
    for created, status, served_by, log, cost, i, o, cached, written in _eventful(rows).iterator(
        chunk_size=2000
    ):
        clients[status if status in ("ok", "refused") else "failed"] += 1
        log = log or []
        rescued = status == "ok" and any(_trouble(e) for e in log)
        for entry in log:
            provider = entry.get("provider", "")
            if not _called(entry):
                per[provider]["not_called"] += 1
            elif entry.get("error"):
                per[provider]["calls"] += 1
                per[provider]["failures"] += 1
                per[provider]["rescued"] += rescued
            else:
                per[provider]["calls"] += 1
        if rescued and served_by:
            per[served_by]["rescues_made"] += 1
        for w in windows:
            if not w.covers(created, now) or not any(
                e.get("provider") == w.provider and _trouble(e) for e in log
            ):
                continue
            w.requests += 1
            minute = created.replace(second=0, microsecond=0)
            w.minutes[
                (minute, "skipped" if not _called(_first(log, w.provider)) else "failed")
            ] += 1
            if rescued:
                w.rescued += 1
                w.minutes[(minute, "rescued")] += 1
                w.fallback_cost += cost
                first = prices.get(log[0].get("model", ""))
                if first is not None and first.known:
                    usage = Usage(i, o, cached, written)
                    w.first_choice_cost += cost_of(usage, first).usd
            elif status in FAILED:
                w.failed += 1
    total = sum(clients.values())
    return {
        "providers": [
            {
                "provider": name,
                "calls": c["calls"],
                "failures": c["failures"],
                "rescued": c["rescued"],
                "unrescued": c["failures"] - c["rescued"],
                "rescues_made": c["rescues_made"],
                "not_called": c["not_called"],
                "failure_rate": c["failures"] / c["calls"] if c["calls"] else None,
            }
            for name, c in sorted(per.items())
            if name
        ],
        "clients": {
            "requests": total,
            "answered": clients["ok"],
            "refused": clients["refused"],
            "failed": clients["failed"],
            "answered_rate": clients["ok"] / total if total else None,
            "refused_rate": clients["refused"] / total if total else None,
            "failed_rate": clients["failed"] / total if total else None,
        },
        "outages": [w.as_dict(now) for w in windows],
    }


def _trouble(entry: dict) -> bool:
    """A failed call, or a provider the breaker kept out: what a fallback rescues from."""
    error = entry.get("error") or ""
    return error == "circuit open" or (bool(error) and _called(entry))


def _first(log: list[dict], provider: str) -> dict:
    return next(e for e in log if e.get("provider") == provider and _trouble(e))
