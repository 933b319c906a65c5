"""Celery tasks of the reports app: thin wrappers around `reports.rollups`."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.utils import timezone

from reports import rollups

RECENT = dt.timedelta(hours=2)


@shared_task(name="reports.tasks.roll_up_recent", time_limit=300, soft_time_limit=240)
def roll_up_recent() -> int:
    """Repair the hours of the last two whose rollups drifted from the ledger (idempotent).

    The drainer already keeps rollups current (a drainer that dies between its insert and
    its rollup cannot happen, but a manual ledger edit can). Two SQL aggregates find the
    hours that differ (`rollups.stale_hours`); only those are recomputed, without a lock
    the drainer waits for. Returns the number of hourly rows changed."""
    now = timezone.now()
    stale = rollups.stale_hours(now - RECENT, now)
    return rollups.repair(stale) if stale else 0


@shared_task(name="reports.tasks.detect_incidents", time_limit=120, soft_time_limit=100)
def detect_incidents() -> int:
    """Find incidents in the recent ledger and circuit events, and announce the new ones
    (reports/incidents.py). Idempotent: a second run updates the same records."""
    from reports import incident_alerts, incidents

    created = incidents.detect()
    incident_alerts.send_pending()
    return len(created)


@shared_task(
    name="reports.tasks.send_monthly_reports",
    autoretry_for=(OSError,),
    retry_backoff=60,
    max_retries=5,
    time_limit=1800,
    soft_time_limit=1700,
)
def send_monthly_reports() -> int:
    """Monthly, on the 1st: last month's report to each team's budget contacts."""
    from gateway.runtime import sync_redis
    from reports import monthly

    return monthly.send_monthly_reports(redis=sync_redis())
