"""Incidents: what the detector task (reports.tasks.detect_incidents, every minute) finds in
the ledger and the circuit events, as records a person can read. Never on the request path.

What opens one:
- **budget_stop**: a hard budget's first refusal in a window. Spend until the stop is the
  window's settled spend the refusal reported; it lasts while refusals keep coming.
- **spend_spike**: a feature spending, in one UTC hour, more than `SPIKE_FACTOR` times its
  usual for that hour of the day (the mean of the same hour over the 7 days before) and at
  least `SPIKE_MIN_USD`. Read from the hourly roll-ups.
- **identical_burst**: at least `BURST_MIN` cache hits from one key with less than
  `BURST_GAP_S` between them. A cache hit is a repeat of an earlier identical request, so a
  retry storm the cache absorbs shows here instead of as a good hit rate. (A request that
  bypasses the cache cannot be recognised as identical.)
- **outage**: a provider's circuit open (reports/availability.py's windows).

Each is one record per occurrence (its `dedupe` key), updated on every run while it lasts.
Budget stops are announced by the "budget exhausted" alert (budgets/exhaustion.py): the
incident links to it and sends nothing. The others go to the alert channels
(reports/incident_alerts.py) once.

Thresholds: settings.INCIDENTS (a dict) overrides the defaults below.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from gateway.models import UsageRecord
from gateway.money import units_to_usd
from reports.filters import ReportFilters
from reports.models import HourlyRollup, Incident

DEFAULTS = {
    "LOOKBACK_H": 3,  # how far back each run reads the ledger
    "QUIET_S": 600,  # a budget stop or burst is over after this long without a new request
    "SPIKE_FACTOR": "5",
    "SPIKE_MIN_USD": "1",
    "BURST_MIN": 50,
    "BURST_GAP_S": 60,
}


def _usd(amount: Decimal) -> str:
    """Cents from a dollar up, four decimals below (a runaway's first dollars matter)."""
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.4f}"


def option(name: str):
    return getattr(settings, "INCIDENTS", {}).get(name, DEFAULTS[name])


def detect(now: dt.datetime | None = None) -> list[Incident]:
    """One run: every incident found in the lookback, created or brought up to date.
    Returns the ones created by this run."""
    now = now or timezone.now()
    since = now - dt.timedelta(hours=option("LOOKBACK_H"))
    found = [*budget_stops(since, now), *spend_spikes(now), *identical_bursts(since, now)]
    found += outages(since, now)
    created = []
    for dedupe, values in found:
        incident, new = Incident.objects.update_or_create(dedupe=dedupe, defaults=values)
        if new:
            created.append(incident)
    return created


def _quiet_end(last: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    return last if (now - last).total_seconds() > option("QUIET_S") else None


def budget_stops(since: dt.datetime, now: dt.datetime) -> list[tuple[str, dict]]:
    refused = UsageRecord.objects.filter(
        created_at__gte=since, created_at__lt=now, status="refused", refusal__kind="budget"
    )
    groups: dict[tuple[int, str], list[tuple]] = defaultdict(list)
    for row in refused.order_by("created_at").values_list(
        "created_at", "team_id", "feature_id", "api_key_id", "refusal"
    ):
        groups[(row[4]["budget_id"], row[4]["window_key"])].append(row)
    found = []
    for (budget_id, window_key), rows in groups.items():
        dedupe = f"budget:{budget_id}:{window_key}"
        existing = Incident.objects.filter(dedupe=dedupe).first()
        first = rows[0]
        started = existing.started_at if existing else first[0]
        refusal = existing.detail if existing else first[4]
        every = UsageRecord.objects.filter(
            created_at__gte=started,
            status="refused",
            refusal__budget_id=budget_id,
            refusal__window_key=window_key,
        )
        keys = Counter(r[3] for r in rows if r[3])
        found.append(
            (
                dedupe,
                {
                    "kind": Incident.Kind.BUDGET_STOP,
                    "started_at": started,
                    "ended_at": _quiet_end(rows[-1][0], now),
                    "team_id": first[1],
                    "feature_id": first[2],
                    "api_key_id": keys.most_common(1)[0][0] if keys else None,
                    "budget_id": budget_id,
                    "requests": every.count(),
                    "requests_refused": every.count(),
                    "spend_usd": Decimal(refusal["spent_usd"]),
                    "summary": f"The {refusal['window']} {refusal['scope']} budget of "
                    f"{refusal['owner']} ({window_key}) stopped its requests at "
                    f"${refusal['spent_usd']} of ${refusal['limit_usd']}.",
                    "detail": refusal,
                },
            )
        )
    return found


def spend_spikes(now: dt.datetime) -> list[tuple[str, dict]]:
    """The current hour and the one before, per feature, against the usual for the hour."""
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    factor, floor = Decimal(option("SPIKE_FACTOR")), Decimal(option("SPIKE_MIN_USD"))
    found = []
    for hour in (this_hour - dt.timedelta(hours=1), this_hour):
        rows = (
            HourlyRollup.objects.filter(hour=hour, feature_key__gt=0)
            .values("team_id", "feature_key")
            .annotate(units=Sum("cost_units"), n=Sum("requests"), refused=Sum("refused"))
            .order_by()
        )
        for row in rows:
            spend = units_to_usd(row["units"] or 0)
            if spend < floor:
                continue
            past = [hour - dt.timedelta(days=d) for d in range(1, 8)]
            usual_units = (
                HourlyRollup.objects.filter(
                    hour__in=past, feature_key=row["feature_key"]
                ).aggregate(u=Sum("cost_units"))["u"]
                or 0
            )
            usual = units_to_usd(usual_units) / 7
            if spend <= usual * factor:
                continue
            fid = row["feature_key"]
            keys = Counter(
                UsageRecord.objects.filter(
                    feature_id=fid,
                    created_at__gte=hour,
                    created_at__lt=hour + dt.timedelta(hours=1),
                ).values_list("api_key_id", flat=True)
            )
            keys.pop(None, None)
            end = hour + dt.timedelta(hours=1)
            found.append(
                (
                    f"spike:{fid}:{hour.isoformat()}",
                    {
                        "kind": Incident.Kind.SPEND_SPIKE,
                        "started_at": hour,
                        "ended_at": end if end <= now else None,
                        "team_id": row["team_id"],
                        "feature_id": fid,
                        "api_key_id": keys.most_common(1)[0][0] if keys else None,
                        "requests": row["n"] or 0,
                        "requests_refused": row["refused"] or 0,
                        "spend_usd": spend,
                        "summary": f"{_usd(spend)} spent in the hour from {hour:%H:00} UTC, "
                        f"against a usual {_usd(usual)} for that hour.",
                        "detail": {"usual_usd": f"{usual:.4f}", "factor": str(factor)},
                    },
                )
            )
    return found


def identical_bursts(since: dt.datetime, now: dt.datetime) -> list[tuple[str, dict]]:
    hits = UsageRecord.objects.filter(
        created_at__gte=since, created_at__lt=now, cache="hit", api_key__isnull=False
    )
    by_key: dict[int, list[tuple]] = defaultdict(list)
    for row in hits.order_by("created_at").values_list(
        "api_key_id", "created_at", "team_id", "feature_id", "saved_usd"
    ):
        by_key[row[0]].append(row)
    gap = dt.timedelta(seconds=option("BURST_GAP_S"))
    found = []
    for key_id, rows in by_key.items():
        runs: list[list[tuple]] = [[rows[0]]]
        for row in rows[1:]:
            if row[1] - runs[-1][-1][1] < gap:
                runs[-1].append(row)
            else:
                runs.append([row])
        for run in runs:
            if len(run) < option("BURST_MIN"):
                continue
            start, last = run[0][1], run[-1][1]
            saved = sum((r[4] for r in run), Decimal(0))
            found.append(
                (
                    f"burst:{key_id}:{start.isoformat()}",
                    {
                        "kind": Incident.Kind.IDENTICAL_BURST,
                        "started_at": start,
                        "ended_at": last if now - last > gap else None,
                        "team_id": run[0][2],
                        "feature_id": run[0][3],
                        "api_key_id": key_id,
                        "requests": len(run),
                        "requests_refused": 0,
                        "spend_usd": Decimal(0),
                        "summary": f"{len(run)} repeated requests from one key in "
                        f"{max(1, round((last - start).total_seconds()))} s, answered from the "
                        f"cache ({_usd(saved)} not spent): a client retrying in a loop?",
                        "detail": {"saved_usd": f"{saved:.4f}"},
                    },
                )
            )
    return found


def outages(since: dt.datetime, now: dt.datetime) -> list[tuple[str, dict]]:
    from reports import availability

    f = ReportFilters(since, now, "custom", "", "", None, None)
    windows = availability.outage_windows(f, now)
    if not windows:
        return []
    # An outage that began before the lookback is measured from its start, not from `since`.
    f = ReportFilters(min(w.lead_in for w in windows), now, "custom", "", "", None, None)
    found = []
    for o in availability.availability(f, now=now)["outages"]:
        end = o["end"]
        found.append(
            (
                f"outage:{o['provider']}:{o['start'].isoformat()}",
                {
                    "kind": Incident.Kind.OUTAGE,
                    "started_at": o["start"],
                    "ended_at": end,
                    "provider": o["provider"],
                    "requests": o["requests"],
                    "requests_refused": o["failed"],
                    "spend_usd": o["fallback_cost_usd"],
                    "summary": f"{o['provider']} unavailable for {o['minutes_long']} min: "
                    f"{o['rescued']} requests rescued by fallbacks for "
                    f"{_usd(o['fallback_cost_usd'])} ({_usd(o['extra_cost_usd'])} more than the "
                    f"first choices), {o['failed']} failed.",
                    "detail": {"extra_cost_usd": f"{o['extra_cost_usd']:.6f}"},
                },
            )
        )
    return found


def page(f: ReportFilters) -> dict:
    """The incidents page's data (and the overview's panel): plain values, JSON-safe."""
    from budgets.keys import EXHAUSTED_THRESHOLD
    from budgets.models import BudgetAlert

    rows = []
    for i in recent(f):
        alert = None
        if i.kind == Incident.Kind.BUDGET_STOP and i.budget_id:
            alert = (
                BudgetAlert.objects.filter(
                    budget_id=i.budget_id,
                    window_key=i.detail.get("window_key", ""),
                    threshold=EXHAUSTED_THRESHOLD,
                )
                .order_by("created_at")
                .values_list("id", "created_at", "status")
                .first()
            )
        rows.append(
            {
                "id": i.id,
                "kind": i.kind,
                "kind_label": i.get_kind_display(),
                "started_at": i.started_at,
                "ended_at": i.ended_at,
                "team": i.team.name if i.team else "",
                "feature": i.feature.name if i.feature else "",
                "key": i.api_key.prefix if i.api_key else "",
                "provider": i.provider,
                "requests": i.requests,
                "requests_refused": i.requests_refused,
                "spend_usd": i.spend_usd,
                "summary": i.summary,
                "alerted_at": i.alerted_at,
                "budget_alert": {"id": alert[0], "sent_at": alert[1], "status": alert[2]}
                if alert
                else None,
            }
        )
    return {"incidents": rows, "ongoing": sum(1 for r in rows if r["ended_at"] is None)}


def recent(f: ReportFilters) -> list[Incident]:
    """Incidents overlapping the report's range, of its teams (outages concern every team)."""
    from django.db.models import Q

    qs = Incident.objects.filter(started_at__lt=f.end).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=f.start)
    )
    if f.team_ids is not None:
        qs = qs.filter(Q(team_id__in=f.team_ids) | Q(team__isnull=True, kind="outage"))
    if f.feature_keys is not None:
        qs = qs.filter(Q(feature_id__in=f.feature_keys) | Q(feature__isnull=True))
    return list(qs.select_related("team", "feature", "api_key", "budget")[:200])
